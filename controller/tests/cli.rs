//! violin-controller and violinctl end to end: the real binaries, a real state database,
//! HTTP over loopback.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use violin_testbed::control::LocalController as Controller;

const SPEC: &str = r#"[environment]
name = "blue"
vni = 1000

[[host]]
name = "h1"
address = "10.250.0.1"

[[host]]
name = "h2"
address = "10.250.0.2"

[[vm]]
name = "a1"
host = "h1"
port = "vm1"
mac = "02:00:00:00:01:01"

[[vm]]
name = "b1"
host = "h2"
port = "vm1"
mac = "02:00:00:00:02:01"

[[limit]]
pair = ["a1", "b1"]
rate_mbit = 10
"#;

fn start(dir: &Path) -> Controller {
    start_with(dir, &[])
}

fn controller(dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_violin-controller"));
    c.args(["--listen", "127.0.0.1:0", "--state"])
        .arg(dir.join("state.redb"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .args(extra);
    c
}

fn start_with(dir: &Path, extra: &[&str]) -> Controller {
    Controller::start(controller(dir, extra)).unwrap()
}

/// Runs violinctl; returns (exit code, stdout, stderr).
fn ctl_code(c: &Controller, token: &Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_violinctl"))
        .args(["--url", &c.url, "--token-file"])
        .arg(token)
        .args(args)
        .env_remove("VIOLIN_CONTROLLER")
        .env_remove("VIOLIN_TOKEN_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs violinctl; returns (success, stdout, stderr).
fn ctl(c: &Controller, token: &Path, args: &[&str]) -> (bool, String, String) {
    let (code, out, err) = ctl_code(c, token, args, "");
    (code == 0, out, err)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("violin-ctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), "0123456789abcdef-test-token\n").unwrap();
    std::fs::write(dir.join("wrong"), "not-the-token-at-all\n").unwrap();
    dir
}

#[test]
fn apply_diff_get_delete_and_state_survives_a_restart() {
    let dir = scratch("life");
    let token = dir.join("token");
    let spec = dir.join("blue.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let spec_s = spec.to_string_lossy().into_owned();

    let c = start(&dir);
    let (ok, out, err) = ctl(&c, &token, &["apply", &spec_s]);
    assert!(ok, "{err}");
    assert!(out.contains("+ vm a1 on h1 port vm1"), "{out}");
    assert!(out.contains("+ limit a1 <-> b1: 10 Mbit/s"), "{out}");
    assert!(out.contains("applied blue"), "{out}");
    let (ok, out, _) = ctl(&c, &token, &["diff", &spec_s]);
    assert!(ok && out.trim() == "environment blue: no changes", "{out}");
    let (ok, out, _) = ctl(&c, &token, &["hosts"]);
    assert!(
        ok && out.contains("h1") && out.contains("10.250.0.2"),
        "{out}"
    );
    let (ok, out, _) = ctl(&c, &token, &["-o", "json", "envs"]);
    assert!(ok);
    let envs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(envs[0]["name"], "blue");
    assert_eq!(envs[0]["vms"], 2);

    // A crash: the controller dies without warning; its state is still there.
    drop(c);
    let c = start(&dir);
    let (ok, out, _) = ctl(&c, &token, &["get", "blue"]);
    assert!(ok && out.contains("rate_mbit = 10"), "{out}");
    std::fs::write(&spec, SPEC.replace("rate_mbit = 10", "rate_mbit = 20")).unwrap();
    let (ok, out, _) = ctl(&c, &token, &["apply", &spec_s]);
    assert!(
        ok && out.contains("~ limit a1 <-> b1: 10 -> 20 Mbit/s"),
        "{out}"
    );

    let (ok, out, _) = ctl(&c, &token, &["delete", "blue"]);
    assert!(ok && out.contains("deleted blue"), "{out}");
    let (ok, _, err) = ctl(&c, &token, &["get", "blue"]);
    assert!(
        !ok && err.contains("no environment \"blue\"; `violinctl envs` lists them (HTTP 404)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_requests_are_refused_whole_and_change_nothing() {
    let dir = scratch("bad");
    let token = dir.join("token");
    let c = start(&dir);
    let good = dir.join("blue.toml");
    std::fs::write(&good, SPEC).unwrap();
    assert!(ctl(&c, &token, &["apply", &good.to_string_lossy()]).0);

    // Without the right token.
    let (ok, _, err) = ctl(&c, &dir.join("wrong"), &["envs"]);
    assert!(
        !ok && err.contains("bearer token") && err.contains("HTTP 401"),
        "{err}"
    );
    let (ok, _, err) = ctl(&c, &dir.join("wrong"), &["delete", "blue"]);
    assert!(!ok && err.contains("HTTP 401"), "{err}");
    // Errors say what to do next.
    assert!(
        err.contains("hint: the token was refused: check --token-file"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_violinctl"))
        .args(["--url", "http://127.0.0.1:9", "--token-file"])
        .arg(&token)
        .arg("envs")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2)
            && err.contains("cannot reach http://127.0.0.1:9")
            && err.contains("hint: is violin-controller running there?"),
        "{err}"
    );

    // A spec with an error, by line and field.
    let bad = dir.join("bad.toml");
    let bad_text = SPEC.replace("host = \"h2\"", "host = \"h9\"");
    let line = bad_text.lines().position(|l| l == "host = \"h9\"").unwrap() + 1;
    std::fs::write(&bad, &bad_text).unwrap();
    let (ok, _, err) = ctl(&c, &token, &["apply", &bad.to_string_lossy()]);
    assert!(!ok, "a bad spec was applied");
    let want = format!("line {line}: vm[1].host: \"h9\" is not a host");
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("HTTP 400"), "{err}");

    // A second environment may not take the first one's VNI.
    let red = dir.join("red.toml");
    std::fs::write(&red, SPEC.replace("name = \"blue\"", "name = \"red\"")).unwrap();
    let (ok, _, err) = ctl(&c, &token, &["apply", &red.to_string_lossy()]);
    assert!(
        !ok && err.contains("environment.vni: 1000 is already environment \"blue\"'s"),
        "{err}"
    );

    // Nothing of those requests changed the state.
    let (ok, out, _) = ctl(&c, &token, &["-o", "json", "envs"]);
    assert!(ok);
    let envs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(envs.as_array().unwrap().len(), 1);
    let (_, out, _) = ctl(&c, &token, &["get", "blue"]);
    assert!(out.contains("host = \"h2\""), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every operation in controller/openapi.json exists on the server (answers 401 without a
/// token rather than 404/405), and the server has no /v1 route the file leaves out.
#[test]
fn openapi_file_matches_the_server() {
    let dir = scratch("openapi");
    let c = start(&dir);
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap(),
    )
    .unwrap();
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{name}", "blue")
            .replace("{host}", "h1")
            .replace("{a}", "h1")
            .replace("{b}", "h2")
            .replace("{id}", "1");
        for method in ["get", "put", "post", "delete"] {
            let Some(op) = item.get(method) else {
                continue;
            };
            operations += 1;
            let open = op.get("security") == Some(&serde_json::json!([{}]));
            let resp =
                ureq::request(&method.to_uppercase(), &format!("{}{concrete}", c.url)).call();
            match resp {
                Ok(r) if open => assert_eq!(r.status(), 200),
                Err(ureq::Error::Status(401, _)) if !open => {}
                other => panic!("{method} {path}: expected 401 without a token, got {other:?}"),
            }
        }
    }
    assert_eq!(operations, 48);
    // The served document is the file.
    let served: serde_json::Value = ureq::get(&format!("{}/openapi.json", c.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(
        served, doc,
        "the served OpenAPI document differs from openapi.json"
    );
    // Not documented, not served.
    match ureq::get(&format!("{}/v1/nonexistent", c.url)).call() {
        Err(ureq::Error::Status(code, _)) => assert!(code == 404 || code == 401, "{code}"),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vnet_primitives_change_the_stored_environment_and_bad_ones_name_the_field() {
    let dir = scratch("vnet");
    let token = dir.join("token");
    let c = start(&dir);
    let spec = dir.join("blue.toml");
    std::fs::write(
        &spec,
        format!("{SPEC}\n[[host]]\nname = \"h3\"\naddress = \"10.250.0.3\"\n"),
    )
    .unwrap();
    assert!(ctl(&c, &token, &["apply", &spec.to_string_lossy()]).0);

    let (ok, out, err) = ctl(&c, &token, &["link", "add", "blue", "h1", "h2"]);
    assert!(ok && out.contains("+ link h1 <-> h2 (udp)"), "{out}{err}");
    let (ok, out, err) = ctl(
        &c,
        &token,
        &["rule", "add", "blue", "h1", "not a1", "b1", "--edge", "h2"],
    );
    // VMs by name; shown by name with the MAC beside it.
    assert!(
        ok && out.contains(
            "+ rule h1: not a1 (02:00:00:00:01:01) -> b1 (02:00:00:00:02:01) via link h1-h2"
        ),
        "{out}{err}"
    );
    let (ok, out, _) = ctl(&c, &token, &["-o", "json", "rules", "--env", "blue"]);
    assert!(ok);
    let rules: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rules[0]["src"], "not 02:00:00:00:01:01");
    assert_eq!(rules[0]["src_vm"], "a1");
    assert_eq!(rules[0]["dst_vm"], "b1");
    assert_eq!(rules[0]["edge"], "h2");
    let (ok, out, _) = ctl(&c, &token, &["rules", "--env", "blue"]);
    assert!(
        ok && out.contains("not a1 (02:00:00:00:01:01)") && out.contains("b1 (02:00:00:00:02:01)"),
        "{out}"
    );
    // MACs keep working, and a name that is no VM says where the names are.
    let (ok, _, err) = ctl(
        &c,
        &token,
        &[
            "rule",
            "add",
            "blue",
            "h1",
            "02:00:00:00:01:01",
            "b2",
            "--edge",
            "h2",
        ],
    );
    assert!(
        !ok && err.contains("dst: \"b2\" is neither a VM of environment blue (a1, b1)")
            && err.contains("violinctl get blue"),
        "{err}"
    );
    // The stored spec is the operator's text with the primitives' tables added.
    let (_, out, _) = ctl(&c, &token, &["get", "blue"]);
    assert!(
        out.contains("[[rule]]") && out.contains("hosts = [\"h1\", \"h2\"]"),
        "{out}"
    );
    let (ok, out, _) = ctl(
        &c,
        &token,
        &["route", "02:00:00:00:01:01", "02:00:00:00:02:01"],
    );
    assert!(ok && out.contains("h1: link h1-h2 (learned)"), "{out}");
    let (ok, by_name, _) = ctl(&c, &token, &["route", "a1", "b1"]);
    assert!(
        ok && by_name == out && out.contains("a1 (02:00:00:00:01:01) -> b1 (02:00:00:00:02:01)"),
        "{by_name}"
    );

    // Refused, naming the field, and nothing changes.
    for (args, want) in [
        (
            vec!["link", "add", "blue", "h1", "h9"],
            "hosts[1]: \"h9\" is not a host",
        ),
        (
            vec![
                "rule",
                "add",
                "blue",
                "h1",
                "any",
                "any",
                "--interface",
                "vm9",
            ],
            "interface: \"vm9\" is not the port of a VM on h1",
        ),
        (
            vec!["rule", "add", "blue", "h1", "any", "any", "--edge", "h3"],
            "edge: there is no link between h1 and h3",
        ),
        (
            vec!["link", "delete", "blue", "h1", "h2"],
            "forwarding rules still use this link",
        ),
        (vec!["bound", "--", "-5"], "seconds: -5 is outside"),
        (
            vec!["route", "02:00:00:00:09:09", "02:00:00:00:02:01"],
            "src: no VM is named \"02:00:00:00:09:09\"",
        ),
    ] {
        let (ok, _, err) = ctl(&c, &token, &args);
        assert!(!ok && err.contains(want), "{args:?}: {err}");
        assert!(err.contains("HTTP 400"), "{err}");
    }
    let (_, after, _) = ctl(&c, &token, &["get", "blue"]);
    assert_eq!(after.matches("[[rule]]").count(), 1, "{after}");
    assert_eq!(after.matches("[[link]]").count(), 1, "{after}");

    // Malformed daemon calls name their field too.
    let ack = ureq::post(&format!("{}/v1/hosts/h1/ack", c.url))
        .set("Authorization", "Bearer 0123456789abcdef-test-token")
        .send_string("{\"generation\": \"seven\"}");
    match ack {
        Err(ureq::Error::Status(400, r)) => {
            let v: serde_json::Value = r.into_json().unwrap();
            assert!(v["error"].as_str().unwrap().contains("invalid type"), "{v}");
        }
        other => panic!("{other:?}"),
    }
    let reg = ureq::post(&format!("{}/v1/hosts/h1/register", c.url))
        .set("Authorization", "Bearer 0123456789abcdef-test-token")
        .send_string("{}");
    match reg {
        Err(ureq::Error::Status(400, r)) => {
            let v: serde_json::Value = r.into_json().unwrap();
            assert_eq!(v["field"], "address", "{v}");
        }
        other => panic!("{other:?}"),
    }

    let (ok, out, _) = ctl(&c, &token, &["bound", "0.5"]);
    assert!(ok && out.contains("bound: 0.500 s"), "{out}");

    // A first explicit link ends the full mesh: rules over links it leaves out refuse it.
    let green = dir.join("green.toml");
    std::fs::write(
        &green,
        SPEC.replace("name = \"blue\"", "name = \"green\"")
            .replace("vni = 1000", "vni = 1001")
            + "\n[[host]]\nname = \"h3\"\naddress = \"10.250.0.3\"\n\n[[rule]]\nhost = \"h1\"\nsrc = \"any\"\ndst = \"any\"\nedge = \"h2\"\n",
    )
    .unwrap();
    let (ok, _, err) = ctl(&c, &token, &["apply", &green.to_string_lossy()]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(&c, &token, &["link", "add", "green", "h1", "h3"]);
    assert!(!ok && err.contains("rule[0].edge"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// violinctl behaves like the tools operators know: version, completion, every output
/// format, specs from standard input, `diff` exit codes, idempotent primitives, and a
/// `--wait` that times out with its own exit code, naming the host.
#[test]
fn violinctl_follows_the_usual_conventions() {
    let dir = scratch("conventions");
    let token = dir.join("token");
    let c = start(&dir);
    let (code, out, _) = ctl_code(&c, &token, &["--version"], "");
    assert!(code == 0 && out.starts_with("violinctl "), "{out}");
    let (code, out, _) = ctl_code(&c, &token, &["completion", "bash"], "");
    assert!(code == 0 && out.contains("_violinctl"), "{out}");

    // A malformed spec is refused before anything is sent, with its line and field.
    let bad = SPEC.replace("vni = 1000", "vni = 0");
    let (code, _, err) = ctl_code(&c, &token, &["apply", "-f", "-"], &bad);
    assert!(
        code == 2 && err.contains("line 3: environment.vni: 0 is outside 1..=16777215"),
        "{code} {err}"
    );
    assert!(!err.contains("HTTP"), "the bad spec was sent: {err}");

    // The spec from standard input; diff says 1 while it differs, 0 once applied.
    let (code, out, _) = ctl_code(&c, &token, &["diff", "-f", "-"], SPEC);
    assert!(code == 1 && out.contains("+ vm a1"), "{code} {out}");
    let commented = format!("# owned by the blue team\n{SPEC}");
    let (code, _, err) = ctl_code(&c, &token, &["apply", "-f", "-"], &commented);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = ctl_code(&c, &token, &["diff", "-f", "-"], SPEC);
    assert!(
        code == 0 && out.trim() == "environment blue: no changes",
        "{code} {out}"
    );
    // Several files, each environment under its name; a changed VM shows only the fields
    // that changed, old -> new.
    let diffs = scratch("diffs");
    let (blue, red) = (diffs.join("blue.toml"), diffs.join("red.toml"));
    std::fs::write(
        &blue,
        SPEC.replace(
            "mac = \"02:00:00:00:01:01\"",
            "mac = \"02:00:00:00:01:01\"\nip = \"10.200.1.9\"",
        ),
    )
    .unwrap();
    std::fs::write(
        &red,
        SPEC.replace("name = \"blue\"", "name = \"red\"")
            .replace("vni = 1000", "vni = 1002"),
    )
    .unwrap();
    let files = [blue.to_string_lossy(), red.to_string_lossy()];
    let (code, out, err) = ctl_code(&c, &token, &["diff", &files[0], &files[1]], "");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("environment blue: 1 change\n  ~ vm a1: ip none -> 10.200.1.9\n"),
        "{out}"
    );
    assert!(
        out.contains("environment red: 5 changes\n  + host h1 (10.250.0.1)"),
        "{out}"
    );
    let (_, json, _) = ctl_code(&c, &token, &["-o", "json", "diff", &files[0]], "");
    let plans: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(plans[0]["environment"], "blue", "{json}");
    assert_eq!(plans[0]["changes"][0], "~ vm a1: ip none -> 10.200.1.9");
    let (code, _, err) = ctl_code(&c, &token, &["diff", &files[0], &files[0]], "");
    assert!(code == 2 && err.contains("in an earlier file too"), "{err}");
    let _ = std::fs::remove_dir_all(&diffs);

    // Every format, for the same answer.
    let (_, json, _) = ctl_code(&c, &token, &["-o", "json", "envs"], "");
    let (_, yaml, _) = ctl_code(&c, &token, &["-o", "yaml", "envs"], "");
    let (_, wide, _) = ctl_code(&c, &token, &["-o", "wide", "envs"], "");
    assert!(json.contains("\"vni\": 1000"), "{json}");
    assert!(
        yaml.contains("- hosts:") && yaml.contains("  vni: 1000"),
        "{yaml}"
    );
    assert!(wide.contains("RULES") && wide.contains("blue"), "{wide}");

    // Primitives: a second add fails (409) unless --may-exist; a second delete fails
    // (404) unless --if-exists.
    let add = ["link", "add", "blue", "h1", "h2"];
    assert_eq!(ctl_code(&c, &token, &add, "").0, 0);
    let (_, stored, _) = ctl_code(&c, &token, &["get", "blue"], "");
    assert!(
        stored.starts_with("# owned by the blue team\n") && stored.contains("[[link]]"),
        "a primitive rewrote the operator's spec: {stored}"
    );
    let (code, _, err) = ctl_code(&c, &token, &add, "");
    assert!(code == 2 && err.contains("HTTP 409"), "{err}");
    let (code, _, err) = ctl_code(&c, &token, &[&add[..], &["--may-exist"]].concat(), "");
    assert!(code == 0 && err.contains("nothing to do"), "{err}");
    let del = ["link", "delete", "blue", "h1", "h2"];
    assert_eq!(ctl_code(&c, &token, &del, "").0, 0);
    assert_eq!(ctl_code(&c, &token, &del, "").0, 2);
    assert_eq!(
        ctl_code(&c, &token, &[&del[..], &["--if-exists"]].concat(), "").0,
        0
    );
    let (code, _, _) = ctl_code(&c, &token, &["delete", "nope", "--if-exists"], "");
    assert_eq!(code, 0);
    // A misspelt environment is not a link already gone.
    let typo = ["link", "delete", "bleu", "h1", "h2", "--if-exists"];
    let (code, _, err) = ctl_code(&c, &token, &typo, "");
    assert!(
        code == 2 && err.contains("no environment \"bleu\""),
        "{err}"
    );
    let (code, _, err) = ctl_code(&c, &token, &["wait", "--timeout=-1"], "");
    assert!(
        code == 2 && err.contains("not a number of seconds"),
        "{err}"
    );

    // A host that registered but never follows its stream: --wait gives up with 3.
    let reg = serde_json::json!({ "address": "10.250.0.1" });
    ureq::post(&format!("{}/v1/hosts/h1/register", c.url))
        .set("Authorization", "Bearer 0123456789abcdef-test-token")
        .send_json(reg)
        .unwrap();
    let (code, _, err) = ctl_code(&c, &token, &["wait", "--timeout", "0.5"], "");
    assert!(
        code == 3 && err.contains("timed out: h1 did not apply"),
        "{code} {err}"
    );

    // Settings from the config file when neither flags nor variables give them.
    let conf = dir.join("violinctl.toml");
    std::fs::write(
        &conf,
        format!(
            "controller = \"{}\"\ntoken_file = \"{}\"\n",
            c.url,
            token.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_violinctl"))
        .args(["--config"])
        .arg(&conf)
        .arg("envs")
        .env_remove("VIOLIN_CONTROLLER")
        .env_remove("VIOLIN_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("blue"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A migration the state cannot carry is refused before anything changes, naming the
/// field: an unknown VM or environment, a destination outside the environment, one that
/// is occupied by the VM already, hosts whose daemons are not connected, a bandwidth of 0.
#[test]
fn migrations_the_state_cannot_carry_are_refused_by_field() {
    let dir = scratch("migrate");
    let token = dir.join("token");
    let spec = dir.join("blue.toml");
    // b1 gets a port of its own, so a move to h1 is refused only for the daemons.
    std::fs::write(
        &spec,
        SPEC.replacen(
            "port = \"vm1\"\nmac = \"02:00:00:00:02:01\"",
            "port = \"vm2\"\nmac = \"02:00:00:00:02:01\"",
            1,
        ),
    )
    .unwrap();
    let c = start(&dir);
    assert!(ctl(&c, &token, &["apply", spec.to_str().unwrap()]).0);
    let cases: [(&[&str], &str); 6] = [
        (
            &["migrate", "x1", "--to", "h2"],
            "vm: \"x1\" is not a VM of any environment",
        ),
        (
            &["migrate", "--env", "red", "--to", "h2"],
            "environment: there is no environment \"red\"",
        ),
        (
            &["migrate", "a1", "--to", "h9"],
            "to: \"h9\" is not a host of environment blue",
        ),
        (
            &["migrate", "a1", "--to", "h1"],
            "to: a1 already runs on h1",
        ),
        (
            &["migrate", "b1", "--to", "h1"],
            "h2's violind is not connected to the controller",
        ),
        (
            &["migrate", "a1", "--to", "h1", "h2"],
            "to: one VM goes to one host",
        ),
    ];
    for (args, want) in cases {
        let (code, _, err) = ctl_code(&c, &token, args, "");
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, _, err) = ctl_code(
        &c,
        &token,
        &["migrate", "a1", "--to", "h2", "--bandwidth", "0"],
        "",
    );
    assert_eq!(code, 2, "{err}");
    let (ok, out, _) = ctl(&c, &token, &["-o", "json", "migrations"]);
    assert!(ok && out.trim() == "[]", "nothing was recorded: {out}");
    let (code, _, err) = ctl_code(&c, &token, &["migrate", "--cancel", "7"], "");
    assert!(
        code == 2 && err.contains("there is no migration 7"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// VADAPT through violinctl: a star through h1; what h2's VM sends h3's (reported as a host
/// would) makes the plan add the h2-h3 fast path, `--apply` adds it, `--explain` tells why,
/// and the star's own links cannot be removed.
#[test]
fn adapt_plans_applies_and_explains_fast_paths() {
    use violin_api::{
        client::{Client, Timeouts},
        rest::{AdaptPlan, Adaptation, LinkInfo, LinkRole},
        share::{PairTraffic, TrafficReport},
        UnicastMac, Vni,
    };
    let dir = scratch("adapt");
    let token = dir.join("token");
    let c = start(&dir);
    let spec = format!(
        "{}[[host]]\nname = \"h3\"\naddress = \"10.250.0.3\"\n\
         [[vm]]\nname = \"c1\"\nhost = \"h3\"\nport = \"vm1\"\nmac = \"02:00:00:00:03:01\"\n\
         [adapt]\nproxy = \"h1\"\nlinks = 1\n",
        SPEC
    );
    std::fs::write(dir.join("blue.toml"), &spec).unwrap();
    let (ok, out, err) = ctl(
        &c,
        &token,
        &["apply", dir.join("blue.toml").to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("+ adapt: star through h1"), "{out}");
    let (ok, out, _) = ctl(&c, &token, &["links", "--env", "blue", "-o", "json"]);
    assert!(ok);
    let links: Vec<LinkInfo> = serde_json::from_str(&out).unwrap();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links.iter().all(|l| l.role == LinkRole::Star), "{links:?}");
    // Nothing sent yet: nothing to add.
    let (ok, out, _) = ctl(&c, &token, &["adapt", "blue", "-o", "json"]);
    assert!(ok, "{out}");
    let plan: AdaptPlan = serde_json::from_str(&out).unwrap();
    assert!(plan.steps.is_empty() && plan.demand.is_empty(), "{plan:?}");

    // b1 (h2) sends c1 (h3), over the reports of a second.
    let client = Client::new(
        &c.url,
        std::fs::read_to_string(&token).unwrap().trim(),
        Timeouts::default(),
    );
    let mac = |s: &str| UnicastMac::parse(s).unwrap();
    // h1 cannot report what b1, on h2, sends: refused and counted, not inferred.
    let stray = TrafficReport {
        pairs: vec![PairTraffic {
            vni: Vni::new(1000).unwrap(),
            src: mac("02:00:00:00:02:01"),
            dst: mac("02:00:00:00:03:01"),
            bytes: 1_000_000,
        }],
    };
    client.report_traffic("h1", &stray).unwrap();
    let metrics = ureq::get(&format!("{}/metrics", c.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("violin_controller_traffic_refused_pairs_total{host=\"h1\"} 1"),
        "{metrics}"
    );
    let report = TrafficReport {
        pairs: vec![PairTraffic {
            vni: Vni::new(1000).unwrap(),
            src: mac("02:00:00:00:02:01"),
            dst: mac("02:00:00:00:03:01"),
            bytes: 1_000_000,
        }],
    };
    let plan = (0..20)
        .find_map(|_| {
            client.report_traffic("h2", &report).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(100));
            let (_, out, _) = ctl(&c, &token, &["adapt", "blue", "--plan", "-o", "json"]);
            let p: AdaptPlan = serde_json::from_str(&out).unwrap();
            (!p.steps.is_empty()).then_some(p)
        })
        .expect("the plan never asked for a fast path");
    assert_eq!(plan.steps[0].action, "add");
    assert_eq!(plan.steps[0].hosts, ["h2", "h3"]);
    assert_eq!(plan.steps[0].pairs, ["b1->c1"]);
    let (ok, text, _) = ctl(&c, &token, &["adapt", "blue"]);
    assert!(
        ok && text.contains("h2-h3") && text.contains("proxy h1"),
        "{text}"
    );

    let (ok, out, err) = ctl(&c, &token, &["adapt", "blue", "--apply", "-o", "json"]);
    assert!(ok, "{out}{err}");
    let done: Vec<Adaptation> = serde_json::from_str(&out).unwrap();
    assert_eq!(done[0].changes, ["+ link h2 <-> h3 (udp)"], "{done:?}");
    assert_eq!(done[0].trigger, "manual");
    let (_, out, _) = ctl(&c, &token, &["links", "--env", "blue", "-o", "json"]);
    let links: Vec<LinkInfo> = serde_json::from_str(&out).unwrap();
    let fast: Vec<_> = links
        .iter()
        .filter(|l| l.role == LinkRole::FastPath)
        .map(|l| l.hosts.join("-"))
        .collect();
    assert_eq!(fast, ["h2-h3"]);
    // Fitted now: applying again changes nothing.
    let (_, out, _) = ctl(&c, &token, &["adapt", "blue", "--apply", "-o", "json"]);
    let again: Vec<Adaptation> = serde_json::from_str(&out).unwrap();
    assert!(again[0].steps.is_empty() && again[0].generation.is_none());
    let (ok, text, _) = ctl(&c, &token, &["adapt", "blue", "--explain"]);
    assert!(
        ok && text.contains("#1 blue (manual)") && text.contains("b1->c1"),
        "{text}"
    );

    // The star's links stay while [adapt] does; an environment without one is refused.
    let (ok, _, err) = ctl(&c, &token, &["link", "delete", "blue", "h1", "h2"]);
    assert!(
        !ok && err.contains("hosts") && err.contains("star"),
        "{err}"
    );
    std::fs::write(
        dir.join("red.toml"),
        SPEC.replace("blue", "red").replace("1000", "1001"),
    )
    .unwrap();
    let (ok, out, err) = ctl(
        &c,
        &token,
        &["apply", dir.join("red.toml").to_str().unwrap()],
    );
    assert!(ok, "{out}{err}");
    let (ok, _, err) = ctl(&c, &token, &["adapt", "red"]);
    assert!(
        !ok && err.contains("adapt") && err.contains("no [adapt]"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each flag with its bad value stops the controller at start, with the flag named.
fn refused_at_start(dir: &Path, bad: &[(&str, &str)]) {
    for (flag, value) in bad {
        let out = controller(dir, &[flag, value]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} was taken");
        assert!(err.contains(flag), "{flag}: {err}");
    }
}

#[test]
fn the_adaptation_managers_settings_are_checked_and_it_answers_without_hosts() {
    let dir = scratch("mgr");
    refused_at_start(
        &dir,
        &[
            ("--manager-alpha", "0.5"),
            ("--manager-beta", "1.1"),
            ("--manager-window", "0"),
            ("--manager-min-gain", "1.5"),
        ],
    );
    let c = start_with(
        &dir,
        &["--manager-period-s", "3600", "--manager-alpha", "1.25"],
    );
    let token = dir.join("token");
    // Nothing to manage: a dry run that says so, an empty log and no usage.
    let (ok, out, err) = ctl(&c, &token, &["adapt"]);
    assert!(ok, "{err}");
    assert!(out.contains("why: no environment needs CPU"), "{out}");
    let (ok, out, err) = ctl(&c, &token, &["adapt", "--explain"]);
    assert!(
        ok && out.contains("no decisions carried out yet"),
        "{out}{err}"
    );
    let (ok, _, err) = ctl(&c, &token, &["usage", "nosuchvm"]);
    assert!(!ok && err.contains("vm: no usage recorded"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn brokers_are_configured_from_a_file_checked_by_field() {
    let dir = scratch("brk");
    let token = dir.join("token");
    // Without --brokers, `violinctl brokers` says how to turn VioCluster on.
    let c = start_with(&dir, &[]);
    let (ok, _, err) = ctl(&c, &token, &["brokers"]);
    assert!(!ok && err.contains("--brokers"), "{err}");
    drop(c);
    let file = dir.join("brokers.toml");
    let good = format!(
        "period_s = 3600\nprovisioner = \"/bin/false\"\n\
         [[domain]]\nname = \"d1\"\nenvironment = \"c1\"\nslurm_conf = \"{0}/none1.conf\"\n\
         [[domain]]\nname = \"d2\"\nenvironment = \"c2\"\nslurm_conf = \"{0}/none2.conf\"\n",
        dir.display()
    );
    std::fs::write(&file, good.replace("3600", "0")).unwrap();
    let out = controller(&dir, &["--brokers", file.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("period_s"), "{err}");
    std::fs::write(&file, &good).unwrap();
    let c = start_with(&dir, &["--brokers", file.to_str().unwrap()]);
    let (ok, out, err) = ctl(&c, &token, &["brokers"]);
    assert!(
        ok && out.contains("no machine lent") && out.contains("no round yet"),
        "{out}{err}"
    );
    // A round whose schedulers cannot be read trades nothing and says why.
    let (ok, out, err) = ctl(&c, &token, &["brokers", "--round"]);
    assert!(ok, "{err}");
    assert!(out.contains("round #1 (manual)"), "{out}");
    assert!(out.contains("error: domain d1"), "{out}");
    assert!(!out.contains("agreed"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A raw request with `token`: (status, body).
fn call(c: &Controller, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let r = ureq::request(method, &format!("{}{path}", c.url))
        .set("Authorization", &format!("Bearer {token}"))
        .set("Content-Type", "application/json");
    match r.send_string(body) {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

#[test]
fn each_host_and_operator_has_its_own_credential_and_every_change_is_audited() {
    let dir = scratch("idn");
    let token = dir.join("token");
    let c = start(&dir);
    let spec = dir.join("blue.toml");
    std::fs::write(&spec, SPEC).unwrap();
    assert!(ctl(&c, &token, &["apply", &spec.to_string_lossy()]).0);
    // The administrator issues a host's credential and a read-only operator's.
    let h1_file = dir.join("h1.token");
    let (ok, _, err) = ctl(
        &c,
        &token,
        &[
            "credential",
            "create",
            "h1",
            "--role",
            "host",
            "--out",
            &h1_file.to_string_lossy(),
        ],
    );
    assert!(ok, "{err}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&h1_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let h1 = std::fs::read_to_string(&h1_file)
        .unwrap()
        .trim()
        .to_string();
    let (ok, ro, err) = ctl(
        &c,
        &token,
        &["credential", "create", "ann", "--role", "read-only"],
    );
    assert!(ok, "{err}");
    let ro = ro.trim().to_string();
    let (ok, _, err) = ctl(
        &c,
        &token,
        &["credential", "create", "h1", "--role", "host"],
    );
    assert!(!ok && err.contains("exists"), "{err}");
    let (ok, _, err) = ctl(
        &c,
        &token,
        &["credential", "create", "admin", "--role", "admin"],
    );
    assert!(!ok && err.contains("name"), "{err}");

    // h1 registers as itself, and is refused as h2, and anything an operator does.
    let reg = r#"{"address":"10.250.0.1"}"#;
    let (code, body) = call(&c, &h1, "POST", "/v1/hosts/h1/register", reg);
    assert_eq!(code, 200, "{body}");
    let (code, body) = call(&c, &h1, "POST", "/v1/hosts/h2/register", reg);
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("may only register, sync, acknowledge and report as h1"),
        "{body}"
    );
    let (code, _) = call(&c, &h1, "POST", "/v1/hosts/h2/ack", r#"{"generation":1}"#);
    assert_eq!(code, 403);
    let (code, _) = call(&c, &h1, "GET", "/v1/environments/blue", "");
    assert_eq!(code, 403);
    let (code, _) = call(&c, &h1, "DELETE", "/v1/environments/blue", "");
    assert_eq!(code, 403);
    let (code, _) = call(&c, &h1, "GET", "/v1/hosts", "");
    assert_eq!(code, 200, "a daemon learns whom to measure");
    // The read-only operator reads, and changes nothing.
    let (code, _) = call(&c, &ro, "GET", "/v1/environments/blue", "");
    assert_eq!(code, 200);
    let (code, body) = call(&c, &ro, "DELETE", "/v1/environments/blue", "");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    let ro_file = dir.join("ro.token");
    std::fs::write(&ro_file, &ro).unwrap();
    let (ok, out, _) = ctl(&c, &ro_file, &["envs"]);
    assert!(ok && out.contains("blue"), "{out}");

    // The audit log says who did what, refusals included; reports are not in it.
    let (ok, out, err) = ctl(&c, &token, &["-o", "json", "audit"]);
    assert!(ok, "{err}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let has = |who: &str, method: &str, path: &str, status: u64| {
        log.iter().any(|e| {
            e["who"] == who && e["method"] == method && e["path"] == path && e["status"] == status
        })
    };
    assert!(has("admin", "PUT", "/v1/environments/blue", 200), "{out}");
    assert!(has("admin", "POST", "/v1/credentials", 200), "{out}");
    assert!(has("h1", "POST", "/v1/hosts/h1/register", 200), "{out}");
    assert!(has("h1", "POST", "/v1/hosts/h2/register", 403), "{out}");
    assert!(has("h1", "GET", "/v1/environments/blue", 403), "{out}");
    assert!(has("ann", "DELETE", "/v1/environments/blue", 403), "{out}");
    assert!(
        !log.iter()
            .any(|e| e["method"] == "GET" && e["status"] == 200),
        "{out}"
    );

    // Revoking h1's credential ends the sync stream it holds open.
    let stream = ureq::get(&format!("{}/v1/hosts/h1/sync", c.url))
        .set("Authorization", &format!("Bearer {h1}"))
        .timeout(std::time::Duration::from_secs(20))
        .call()
        .unwrap();
    let mut reader = BufReader::new(stream.into_reader());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("snapshot"), "{line}");
    // Revoked, a token is refused; the list never shows a token.
    let (ok, out, _) = ctl(&c, &token, &["credential", "list"]);
    assert!(
        ok && out.contains("h1") && out.contains("read_only") && !out.contains(&h1),
        "{out}"
    );
    assert!(ctl(&c, &token, &["credential", "delete", "h1"]).0);
    let mut rest = String::new();
    let n = std::io::Read::read_to_string(&mut reader, &mut rest)
        .expect("the stream ends, well before its 20 s timeout");
    assert!(!rest.contains("snapshot"), "{n} more bytes: {rest}");
    let (code, _) = call(&c, &h1, "POST", "/v1/hosts/h1/register", reg);
    assert_eq!(code, 401);
    let (ok, _, err) = ctl(&c, &token, &["credential", "delete", "h1"]);
    assert!(!ok && err.contains("no credential"), "{err}");
    // Credentials survive a restart.
    drop(c);
    let c = start(&dir);
    let (code, _) = call(&c, &ro, "GET", "/v1/environments", "");
    assert_eq!(code, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn health_is_open_and_sigterm_stops_gracefully_with_streams_open() {
    let dir = scratch("stop");
    let mut c = start(&dir);
    let h: serde_json::Value = ureq::get(&format!("{}/healthz", c.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(h["status"], "ok", "{h}");
    // A daemon's sync stream: open for as long as the controller runs.
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    let stream = ureq::get(&format!("{}/v1/hosts/h1/sync", c.url))
        .set("Authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    let mut reader = BufReader::new(stream.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("snapshot"), "{first}");
    let pid = c.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(s) = c.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    drop(reader);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn vttif_parameters_are_checked_at_start() {
    let dir = scratch("vttif");
    refused_at_start(
        &dir,
        &[
            ("--vttif-threshold", "2"),
            ("--vttif-smoothing-ms", "0"),
            ("--vttif-settle-ms", "5000"),
        ],
    );
    // Good ones are taken.
    let c = start_with(
        &dir,
        &["--vttif-smoothing-ms", "1000", "--vttif-settle-ms", "200"],
    );
    assert!(c.url.starts_with("http://"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// This replica's health: (role, leader).
fn replica(c: &Controller) -> Option<(String, Option<String>)> {
    let h: serde_json::Value = ureq::get(&format!("{}/healthz", c.url))
        .call()
        .ok()?
        .into_json()
        .ok()?;
    let r = &h["replica"];
    Some((
        r["role"].as_str()?.to_string(),
        r["leader"].as_str().map(str::to_string),
    ))
}

/// Waits until `c` has `role` (and knows `leader`, if given).
fn wait_role(c: &Controller, role: &str, leader: Option<&str>, within_s: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(within_s);
    loop {
        let now = replica(c);
        if now
            .as_ref()
            .is_some_and(|(r, l)| r == role && (leader.is_none() || l.as_deref() == leader))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} is not {role} after {within_s} s: {now:?}",
            c.url
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Two controller replicas on a 3-member etcd: one leads, the other answers reads and
/// redirects writes; violinctl given both URLs fails over when the leader is killed, no
/// acknowledged change is lost, a killed etcd member changes nothing, and a replica that
/// stops cleanly hands the lead over at once.
#[test]
fn replicas_on_etcd_elect_a_leader_and_fail_over() {
    let etcd = violin_testbed::etcd::Cluster::local("cl", 3).unwrap_or_else(|e| {
        panic!("this test needs etcd (`cargo xtask setup` installs etcd-server): {e:#}")
    });
    let dir = scratch("replicas");
    let token = dir.join("token");
    let eps = etcd.endpoints();
    let flags = [
        "--store",
        "etcd",
        "--etcd-endpoints",
        eps.as_str(),
        "--leader-ttl-s",
        "6",
    ];
    let a = start_with(&dir, &flags);
    wait_role(&a, "leader", None, 15);
    let b = start_with(&dir, &flags);
    wait_role(&b, "follower", Some(&a.url), 15);

    // Through the follower: the write goes to the leader, the read is the follower's.
    let spec = dir.join("blue.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let spec_s = spec.to_string_lossy().into_owned();
    let (ok, out, err) = ctl(&b, &token, &["apply", &spec_s]);
    assert!(ok && out.contains("applied blue"), "{out}{err}");
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let key = std::fs::read_to_string(&token).unwrap();
    let auth = format!("Bearer {}", key.trim());
    let got = agent
        .get(&format!("{}/v1/environments/blue", b.url))
        .set("Authorization", &auth)
        .call()
        .expect("the follower answers reads");
    assert_eq!(got.status(), 200);
    let put = agent
        .put(&format!("{}/v1/config-time-bound", b.url))
        .set("Authorization", &auth)
        .send_json(serde_json::json!({"seconds": 2.0}))
        .expect("a redirect");
    assert_eq!(put.status(), 307);
    assert_eq!(put.header("X-Violin-Leader"), Some(a.url.as_str()));

    // The leader dies; violinctl, told of both, reaches the new one.
    let both = Controller {
        child: Command::new("true").spawn().unwrap(),
        url: format!("{},{}", a.url, b.url),
    };
    drop(a);
    wait_role(&b, "leader", None, 15);
    std::fs::write(&spec, SPEC.replace("rate_mbit = 10", "rate_mbit = 20")).unwrap();
    let (ok, out, err) = ctl(&both, &token, &["apply", &spec_s]);
    assert!(
        ok && out.contains("~ limit a1 <-> b1: 10 -> 20 Mbit/s"),
        "{out}{err}"
    );
    let (ok, out, _) = ctl(&both, &token, &["-o", "json", "envs"]);
    assert!(ok, "{out}");
    let envs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(envs.as_array().unwrap().len(), 1, "{envs}");

    // One etcd member of three dies: the quorum stands and writes go on.
    let mut etcd = etcd;
    etcd.members[0].kill();
    let (ok, out, err) = ctl(&both, &token, &["delete", "blue"]);
    assert!(ok && out.contains("deleted blue"), "{out}{err}");

    // The old leader comes back as a follower, with the state as the leader left it.
    let a = start_with(&dir, &flags);
    wait_role(&a, "follower", Some(&b.url), 15);
    let a_ctl = Controller {
        child: Command::new("true").spawn().unwrap(),
        url: a.url.clone(),
    };
    let (ok, _, err) = ctl(&a_ctl, &token, &["get", "blue"]);
    assert!(!ok && err.contains("HTTP 404"), "{err}");

    // A clean stop resigns: the follower leads long before the 6 s lease would end (at
    // least 4 s after b's last renewal).
    let mut b = b;
    let pid = b.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(b.child.wait().unwrap().success());
    wait_role(&a, "leader", None, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn status_shows_the_installation_and_exits_1_when_something_needs_attention() {
    let dir = scratch("status");
    let token = dir.join("token");
    let c = start(&dir);
    let admin = "0123456789abcdef-test-token";
    // Nothing yet: all is well.
    let (code, out, err) = ctl_code(&c, &token, &["status"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("controller    ok (generation 0, only on redb;")
            && out.contains("hosts         0 of 0 in sync")
            && out.contains("drops         none in the last 60 s")
            && out.trim_end().ends_with("all well"),
        "{out}"
    );
    // Hosts named by a spec that never registered need attention, and say where to look.
    let spec = dir.join("blue.toml");
    std::fs::write(&spec, SPEC).unwrap();
    assert!(ctl(&c, &token, &["apply", &spec.to_string_lossy()]).0);
    let (code, out, _) = ctl_code(&c, &token, &["status"], "");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("hosts         0 of 2 in sync")
            && out.contains("environments  blue (vni 1000, 2 VMs)")
            && out.contains("- host h1 is not registered: see `violinctl hosts`"),
        "{out}"
    );
    // Two reports of h1's datapath: the drops between them, and a map nearly full.
    let report = |spoofed: u64| {
        format!(
            "{{\"drops\": {{\"spoofed_ip\": {spoofed}, \"storm\": 7, \"rate_limited\": {spoofed}}}, \
             \"map_entries\": {{\"fdb\": 950, \"ports\": 2}}, \
             \"map_capacity\": {{\"fdb\": 1000, \"ports\": 64}}}}"
        )
    };
    for n in [0, 3] {
        let (code, body) = call(&c, admin, "POST", "/v1/hosts/h1/health", &report(n));
        assert_eq!(code, 200, "{body}");
    }
    let (code, out, _) = ctl_code(&c, &token, &["status"], "");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("drops         in the last 60 s:")
            && out.contains("h1    spoofed_ip    3")
            && out.contains("h1    rate_limited  3")
            && !out.contains("storm")
            && !out.contains("rate_limited) in the last minute")
            && out.contains("maps          fullest: h1's fdb, 950 of 1000 (95%)")
            && out.contains("- host h1 dropped 3 frames (spoofed_ip) in the last minute")
            && out.contains("- host h1's fdb map is 950 of 1000 full"),
        "{out}"
    );
    let (_, json, _) = ctl_code(&c, &token, &["-o", "json", "status"], "");
    let s: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(s["drops"][1]["host"], "h1");
    assert_eq!(s["drops"][1]["reason"], "spoofed_ip");
    assert_eq!(s["drops"][1]["frames"], 3);
    assert_eq!(s["window_seconds"], 60);
    // A malformed report is refused by field and changes nothing.
    let (code, body) = call(
        &c,
        admin,
        "POST",
        "/v1/hosts/h1/health",
        "{\"drops\": {\"spoofed_ip\": -1}}",
    );
    assert_eq!(code, 400, "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}
