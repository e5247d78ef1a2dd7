//! Output shared by Violin's command-line tools: YAML for `-o yaml` (JSON is serde_json's).

/// A JSON value as YAML (block style; strings quoted when YAML would read them otherwise).
pub fn yaml(v: &serde_json::Value) -> String {
    let mut s = String::new();
    write_yaml(&mut s, v, 0);
    if s.is_empty() || !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn scalar(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => {
            // Plain only what no YAML reader takes for anything but a string: a word that
            // starts with a letter, and none of YAML 1.1's booleans or nulls in any case.
            let word = s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
            let reserved = matches!(
                s.to_ascii_lowercase().as_str(),
                "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
            );
            let plain = word && !reserved;
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        other => other.to_string(),
    }
}

fn write_yaml(out: &mut String, v: &serde_json::Value, indent: usize) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if m.is_empty() => out.push_str("{}\n"),
        Value::Array(a) if a.is_empty() => out.push_str("[]\n"),
        Value::Object(m) => {
            for (k, x) in m {
                // Keys are quoted like values, so "1000" stays a string.
                let k = scalar(&Value::String(k.clone()));
                match x {
                    Value::Object(i) if !i.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_yaml(out, x, indent + 2);
                    }
                    Value::Array(i) if !i.is_empty() => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        write_yaml(out, x, indent);
                    }
                    _ => {
                        out.push_str(&format!("{pad}{k}: "));
                        write_yaml(out, x, 0);
                    }
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                out.push_str(&format!("{pad}- "));
                let mut inner = String::new();
                write_yaml(&mut inner, x, indent + 2);
                // The first line follows the dash; the rest keep their indentation.
                out.push_str(inner.trim_start());
                if !inner.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        _ => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::yaml;

    #[test]
    fn yaml_reads_like_yaml() {
        let v = serde_json::json!({
            "name": "blue", "vni": 1000, "hosts": ["h1", "h2"], "spec": "a = 1\n",
            "hops": [{"host": "h1", "action": "link h1-h2"}], "empty": [], "none": null,
        });
        let y = yaml(&v);
        assert!(y.contains("name: blue\n"), "{y}");
        assert!(y.contains("vni: 1000\n"), "{y}");
        assert!(y.contains("hosts:\n- h1\n- h2\n"), "{y}");
        assert!(y.contains("spec: \"a = 1\\n\"\n"), "{y}");
        assert!(
            y.contains("hops:\n- action: \"link h1-h2\"\n  host: h1\n"),
            "{y}"
        );
        assert!(y.contains("empty: []\n"), "{y}");
        assert!(y.contains("none: null\n"), "{y}");
        for tricky in [
            "True", "on", "Off", "y", "0x1f", ".inf", "-", "1e3", "10.0.0.1",
        ] {
            let y = yaml(&serde_json::json!({ "k": tricky }));
            assert_eq!(
                y,
                format!("k: {}\n", serde_json::to_string(tricky).unwrap())
            );
        }
    }
}
