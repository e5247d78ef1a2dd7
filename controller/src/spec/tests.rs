use super::*;

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
ip = "10.200.1.1"

[[vm]]
name = "b1"
host = "h2"
port = "vm1"
mac = "02:00:00:00:02:01"

[[allow]]
pair = ["b1", "a1"]

[[limit]]
pair = ["a1", "b1"]
rate_mbit = 10
"#;

fn error(text: &str) -> SpecError {
    Spec::parse(text).unwrap_err()
}

/// The 1-based line of `text` that contains `needle`.
fn line_with(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

#[test]
fn a_good_spec_parses() {
    let s = Spec::parse(SPEC).unwrap();
    assert_eq!((s.name.as_str(), s.vni.get()), ("blue", 1000));
    assert_eq!(s.hosts.len(), 2);
    assert_eq!(s.vms["a1"].ip, Some(Ipv4Addr::new(10, 200, 1, 1)));
    assert!(s.allowed.contains(&("a1".to_string(), "b1".to_string())));
    let l = s.limits[&("a1".to_string(), "b1".to_string())];
    assert_eq!((l.rate_mbit.get(), l.burst_kib.get()), (10.0, 64));
}

#[test]
fn errors_name_the_line_and_field() {
    let case = |from: &str, to: &str, field: &str, reason: &str| {
        let text = SPEC.replace(from, to);
        let e = error(&text);
        assert_eq!(e.field, field, "{e}");
        assert_eq!(e.line, line_with(&text, to.lines().last().unwrap()), "{e}");
        assert!(e.reason.contains(reason), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("line {}: {field}: ", e.line)),
            "{e}"
        );
    };
    case(
        "host = \"h2\"",
        "host = \"h9\"",
        "vm[1].host",
        "\"h9\" is not a host",
    );
    case(
        "mac = \"02:00:00:00:02:01\"",
        "mac = \"02:00:00:00:01:01\" # b1 takes a1's MAC",
        "vm[1].mac",
        "already used by VM \"a1\"",
    );
    case("vni = 1000", "vni = 0", "environment.vni", "outside");
    case(
        "address = \"10.250.0.2\"",
        "address = \"fd00:250::2\"",
        "host[1].address",
        "not of the family of host[0].address 10.250.0.1",
    );
    case(
        "address = \"10.250.0.2\"",
        "address = \"::ffff:10.250.0.2\"",
        "host[1].address",
        "not a unicast address",
    );
    case(
        "pair = [\"b1\", \"a1\"]",
        "pair = [\"b1\", \"c1\"]",
        "allow[0].pair",
        "\"c1\" is not a VM",
    );
    case(
        "rate_mbit = 10",
        "rate_mbit = -1",
        "limit[0].rate_mbit",
        "outside",
    );
    case(
        "ip = \"10.200.1.1\"",
        "ip = \"10.200.1\"",
        "vm[0].ip",
        "invalid IPv4 address syntax",
    );
    // Unknown fields: the TOML parser's message, at its line, naming the table.
    case(
        "rate_mbit = 10",
        "rate_mbit = 10\ncolour = 1",
        "limit[0].colour",
        "unknown field `colour`",
    );
    case(
        "mac = \"02:00:00:00:02:01\"",
        "mac = \"03:00:00:00:02:01\"",
        "vm[1].mac",
        "not a unicast MAC address",
    );
    case(
        "name = \"b1\"",
        "name = \"any\"",
        "vm[1].name",
        "a keyword of forwarding rules",
    );
}

#[test]
fn plan_lists_what_changes() {
    let cur = Spec::parse(SPEC).unwrap();
    // Nothing to do for the same spec.
    assert!(plan(Some(&cur), &cur).is_empty());
    // A new environment: everything is added.
    let all = plan(None, &cur);
    assert_eq!(all.len(), 6, "{all:?}");
    assert_eq!(all[0].to_string(), "+ host h1 (10.250.0.1)");
    assert_eq!(
        all[2].to_string(),
        "+ vm a1 on h1 port vm1 (02:00:00:00:01:01, 10.200.1.1)"
    );
    // Move b1, drop the allow-list, change the limit, add a VM.
    let text = SPEC
        .replace(
            "host = \"h2\"\nport = \"vm1\"",
            "host = \"h1\"\nport = \"vm2\"",
        )
        .replace("[[allow]]\npair = [\"b1\", \"a1\"]\n", "")
        .replace("rate_mbit = 10", "rate_mbit = 20")
        + "\n[[vm]]\nname = \"c1\"\nhost = \"h2\"\nport = \"vm3\"\nmac = \"02:00:00:00:02:03\"\n";
    let want = Spec::parse(&text).unwrap();
    let changes: Vec<String> = plan(Some(&cur), &want)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        changes,
        vec![
            "~ vm b1: host h2 -> h1, port vm1 -> vm2",
            "+ vm c1 on h2 port vm3 (02:00:00:00:02:03)",
            "- allow a1 <-> b1",
            "~ limit a1 <-> b1: 10 -> 20 Mbit/s, burst 64 -> 64 KiB",
        ]
    );
}

#[test]
fn plans_show_each_changed_field_and_rules_by_vm_name() {
    let cur = Spec::parse(SPEC).unwrap();
    let show = |text: &str| -> Vec<String> {
        plan(Some(&cur), &Spec::parse(text).unwrap())
            .iter()
            .map(|c| c.to_string())
            .collect()
    };
    // Only the IP changed: only the IP is shown.
    assert_eq!(
        show(&SPEC.replace("10.200.1.1", "10.200.1.9")),
        ["~ vm a1: ip 10.200.1.1 -> 10.200.1.9"]
    );
    assert_eq!(
        show(&SPEC.replace("ip = \"10.200.1.1\"\n", "")),
        ["~ vm a1: ip 10.200.1.1 -> none"]
    );
    assert_eq!(
        show(&SPEC.replace("02:00:00:00:02:01", "02:00:00:00:02:07")),
        ["~ vm b1: mac 02:00:00:00:02:01 -> 02:00:00:00:02:07"]
    );
    assert_eq!(
        show(&SPEC.replace("10.250.0.2", "10.250.0.12")),
        ["~ host h2: address 10.250.0.2 -> 10.250.0.12"]
    );
    assert_eq!(
        show(
            &SPEC
                .replace("name = \"h2\"\naddress", "name = \"h3\"\naddress")
                .replace("host = \"h2\"", "host = \"h3\"")
        ),
        [
            "+ host h3 (10.250.0.2)",
            "- host h2 (10.250.0.2)",
            "~ vm b1: host h2 -> h3",
        ]
    );
    // Rules name the VMs whose MACs they match.
    let ruled = format!(
        "{SPEC}[[rule]]\nhost = \"h1\"\nsrc = \"not 02:00:00:00:01:01\"\n\
         dst = \"02:00:00:00:02:01\"\nedge = \"h2\"\n"
    );
    assert_eq!(
        show(&ruled),
        ["+ rule h1: not a1 (02:00:00:00:01:01) -> b1 (02:00:00:00:02:01) via link h1-h2"]
    );
}

#[test]
fn storm_control_is_set_per_environment_and_planned() {
    let cur = Spec::parse(SPEC).unwrap();
    assert_eq!(cur.storm_pps, None, "unset: violind's default");
    let text = SPEC.replacen("vni = ", "storm_pps = 200\nvni = ", 1);
    let want = Spec::parse(&text).unwrap();
    assert_eq!(want.storm_pps, Some(200));
    let changes: Vec<String> = plan(Some(&cur), &want)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(changes, vec!["~ storm control: default -> 200 frames/s"]);
    let off = Spec::parse(&SPEC.replacen("vni = ", "storm_pps = 0\nvni = ", 1)).unwrap();
    assert_eq!(
        plan(Some(&want), &off)[0].to_string(),
        "~ storm control: 200 frames/s -> off"
    );
    // Every host's share carries it.
    let share = crate::share::share_of("h1", 1, [&want], &[], &Default::default());
    assert_eq!(share.environments[0].storm_pps, Some(200));
    // A rate that is no number is refused naming the field.
    let bad = SPEC.replacen("vni = ", "storm_pps = \"fast\"\nvni = ", 1);
    let e = Spec::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("storm_pps"), "{e}");
}

const NET: &str = r#"
[[host]]
name = "h3"
address = "10.250.0.3"

[[link]]
hosts = ["h1", "h2"]

[[link]]
hosts = ["h2", "h3"]
type = "udp"

[[rule]]
host = "h1"
src = "any"
dst = "02:00:00:00:02:01"
edge = "h2"

[[rule]]
host = "h2"
src = "not 02:00:00:00:02:01"
dst = "none"
interface = "vm1"
"#;

#[test]
fn links_and_rules_parse_and_round_trip_through_canonical_toml() {
    let text = format!("{SPEC}{NET}");
    let s = Spec::parse(&text).unwrap();
    assert_eq!(s.links.len(), 2);
    assert_eq!(s.rules.len(), 2);
    assert_eq!(s.rules[0].target, Target::Edge("h2".into()));
    assert_eq!(s.rules[1].dst, MacMatch::None);
    assert_eq!(s.neighbours("h2").len(), 2);
    assert_eq!(s.neighbours("h1").len(), 1);
}

#[test]
fn primitives_edit_the_text_and_keep_its_comments() {
    let text = format!("# the operator's note\n{SPEC}{NET}");
    let cur = Spec::parse(&text).unwrap();
    // Drop the first rule and link h1-h3 is added with a rule over it.
    let mut next = cur.clone();
    next.rules.remove(0);
    next.links.insert(("h1".into(), "h3".into()));
    next.rules.push(Rule {
        host: "h1".into(),
        src: MacMatch::Any,
        dst: MacMatch::Exact([2, 0, 0, 0, 3, 1]),
        target: Target::Edge("h3".into()),
    });
    let edited = edit::edit(&text, &next).unwrap();
    assert_eq!(Spec::parse(&edited).unwrap(), next, "{edited}");
    assert!(edited.starts_with("# the operator's note\n"), "{edited}");
    // Everything before the first link table is untouched.
    let head = &text[..text.find("[[link]]").unwrap()];
    assert!(edited.starts_with(head), "{edited}");
    // Back again: the text parses to the original spec (the re-added rule comes last).
    let back = Spec::parse(&edit::edit(&edited, &cur).unwrap()).unwrap();
    let sorted = |s: &Spec| {
        let mut r = s.rules.clone();
        r.sort();
        r
    };
    assert_eq!((&back.links, sorted(&back)), (&cur.links, sorted(&cur)));
    // No links and no rules left: the tables go.
    let mut bare = cur.clone();
    bare.links.clear();
    bare.rules.clear();
    let none = edit::edit(&text, &bare).unwrap();
    assert!(
        !none.contains("[[link]]") && !none.contains("[[rule]]"),
        "{none}"
    );
    assert_eq!(Spec::parse(&none).unwrap(), bare);
}

#[test]
fn bad_links_and_rules_name_the_line_and_field() {
    let text = format!("{SPEC}{NET}");
    let e = error(&text.replace("type = \"udp\"", "type = \"tcp\""));
    assert_eq!(e.field, "link[1].type");
    assert!(e.reason.contains("UDP"), "{e}");
    let e = error(&text.replace("hosts = [\"h2\", \"h3\"]", "hosts = [\"h2\", \"h9\"]"));
    assert_eq!(e.field, "link[1].hosts");
    let e = error(&text.replace("edge = \"h2\"", "edge = \"h3\""));
    assert_eq!(e.field, "rule[0].edge");
    assert!(e.reason.contains("no link between h1 and h3"), "{e}");
    let bad_src = text.replace("src = \"any\"", "src = \"none\"");
    let e = error(&bad_src);
    assert_eq!(e.field, "rule[0].src");
    assert_eq!(e.line, line_with(&bad_src, "src = \"none\""));
    let e = error(&text.replace("interface = \"vm1\"", "interface = \"vm7\""));
    assert_eq!(e.field, "rule[1].interface");
    let e = error(&text.replace("interface = \"vm1\"", "interface = \"vm1\"\nedge = \"h1\""));
    assert_eq!(e.field, "rule[1].edge");
    let twice = format!("{text}\n[[rule]]\nhost = \"h1\"\nsrc = \"any\"\ndst = \"02:00:00:00:02:01\"\nedge = \"h2\"\n");
    assert_eq!(error(&twice).field, "rule[2].src");
}

#[test]
fn a_migration_moves_the_vm_in_the_text() {
    // a's port is its own on h2 too (a migration to a host using it is refused).
    let spec = crate::spec::THREE_HOSTS.replacen("port = \"vm1\"", "port = \"vm7\"", 1);
    let text = format!("# keep me\n{spec}");
    let edited = edit::set_vm_host(&text, "a", "h2").unwrap();
    let mut want = Spec::parse(&text).unwrap();
    want.vms.get_mut("a").unwrap().host = "h2".into();
    assert_eq!(Spec::parse(&edited).unwrap(), want, "{edited}");
    assert!(edited.starts_with("# keep me\n"), "{edited}");
}

#[test]
fn a_borrowed_vm_joins_and_leaves_the_text() {
    let text = format!("# keep me\n{SPEC}");
    let vm = edit::NewVm {
        name: "x9",
        host: "h3",
        port: "vb1",
        mac: "02:00:00:00:09:01",
        ip: Some("10.200.1.9".parse().unwrap()),
        host_address: Some("10.250.0.3".parse().unwrap()),
    };
    let added = edit::add_vm(&text, &vm).unwrap();
    let spec = Spec::parse(&added).unwrap_or_else(|e| panic!("{e}\n{added}"));
    assert_eq!(spec.vms["x9"].host, "h3");
    assert!(added.starts_with("# keep me\n"), "{added}");
    let removed = edit::remove_host(&edit::remove_vm(&added, "x9").unwrap(), "h3").unwrap();
    let back = Spec::parse(&removed).unwrap();
    assert!(!back.vms.contains_key("x9"));
    assert!(!back.hosts.contains_key("h3"));
    assert_eq!(back.vms.len(), Spec::parse(SPEC).unwrap().vms.len());
    // Without the host's address, a host the spec does not list is refused by name.
    let e = Spec::parse(
        &edit::add_vm(
            &text,
            &edit::NewVm {
                host_address: None,
                ..vm
            },
        )
        .unwrap(),
    )
    .unwrap_err();
    assert!(e.field.ends_with(".host"), "{e}");
}

#[test]
fn vm_bounds_are_planned_and_reach_the_vms_host_only() {
    let cur = Spec::parse(SPEC).unwrap();
    let vm_limit = "\n[[limit]]\nvm = \"a1\"\nrate_mbit = 100\nburst_kib = 32\n";
    let want = Spec::parse(&format!("{SPEC}{vm_limit}")).unwrap();
    let l = want.vm_limits["a1"];
    assert_eq!((l.rate_mbit.get(), l.burst_kib.get()), (100.0, 32));
    let changes: Vec<String> = plan(Some(&cur), &want)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        changes,
        vec!["+ limit vm a1 (to other hosts): 100 Mbit/s, burst 32 KiB"]
    );
    let raised = Spec::parse(&format!("{SPEC}{}", vm_limit.replace("100", "200"))).unwrap();
    assert_eq!(
        plan(Some(&want), &raised)[0].to_string(),
        "~ limit vm a1 (to other hosts): 100 -> 200 Mbit/s, burst 32 -> 32 KiB"
    );
    assert_eq!(plan(Some(&want), &cur)[0].to_string(), "- limit vm a1");
    // a1's host carries the bound on a1's identity; the other host has nothing of it.
    let h1 = crate::share::share_of("h1", 1, [&want], &[], &Default::default());
    let a1 = &h1.environments[0].vms[0];
    assert_eq!(a1.limit, Some(l));
    let h2 = crate::share::share_of("h2", 1, [&want], &[], &Default::default());
    assert!(h2.environments[0].vms.iter().all(|v| v.limit.is_none()));

    // A limit names a pair or a VM, one of them, and a VM of the spec.
    let e = error(&format!("{SPEC}\n[[limit]]\nvm = \"z9\"\nrate_mbit = 1\n"));
    assert_eq!(e.field, "limit[1].vm", "{e}");
    assert!(e.reason.contains("\"z9\" is not a VM"), "{e}");
    let e = error(&format!("{SPEC}\n[[limit]]\nrate_mbit = 1\n"));
    assert_eq!(e.field, "limit[1]", "{e}");
    assert!(e.reason.contains("needs `pair`"), "{e}");
    let e = error(&format!(
        "{SPEC}\n[[limit]]\npair = [\"a1\", \"b1\"]\nvm = \"a1\"\nrate_mbit = 1\n"
    ));
    assert_eq!(e.field, "limit[1]", "{e}");
    assert!(e.reason.contains("not both"), "{e}");
}

#[test]
fn an_adapted_environment_is_a_star_through_its_proxy() {
    let three = crate::spec::THREE_HOSTS;
    let text = format!("{three}[adapt]\nproxy = \"h2\"\nlinks = 1\n");
    let s = Spec::parse(&text).unwrap();
    let set = |v: &[&str]| v.iter().map(|h| h.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(s.neighbours("h1"), set(&["h2"]));
    assert_eq!(s.neighbours("h2"), set(&["h1", "h3"]));
    assert!(s.linked("h1", "h2") && !s.linked("h1", "h3"));
    let a = s.adapt.as_ref().unwrap();
    assert_eq!(
        (a.budget, a.auto, a.hold_ms),
        (Some(1), false, DEFAULT_HOLD_MS)
    );
    // A fast-path link joins the spokes; the star's links are not listed.
    let fast = format!("{text}[[link]]\nhosts = [\"h1\", \"h3\"]\n");
    assert!(Spec::parse(&fast).unwrap().linked("h1", "h3"));
    let e = error(&format!("{text}[[link]]\nhosts = [\"h1\", \"h2\"]\n"));
    assert_eq!(e.field, "link[0].hosts");
    assert!(e.reason.contains("star"), "{e}");
    let e = error(&text.replace("proxy = \"h2\"", "proxy = \"h9\""));
    assert_eq!(e.field, "adapt.proxy");
    assert_eq!(e.line, line_with(&text, "proxy ="));
    let short = format!("{text}hold_ms = 5\n");
    let e = error(&short);
    assert_eq!(e.field, "adapt.hold_ms");
    assert_eq!(e.line, line_with(&short, "hold_ms"));
    let e = error(&format!("{text}migrate = true\n"));
    assert_eq!(e.field, "adapt.migrate");
    let e = error(&format!("{text}vms_per_host = 0\n"));
    assert_eq!(e.field, "adapt.vms_per_host");
    let e = error(&format!("{text}budget = 5\n"));
    assert!(e.to_string().contains("budget"), "{e}");
    // Planned as a change of its own; every host's share names the hub.
    let plain = Spec::parse(three).unwrap();
    let changes: Vec<String> = plan(Some(&plain), &s)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].starts_with("+ adapt: star through h2"),
        "{changes:?}"
    );
    let share = crate::share::share_of("h1", 1, [&s], &[], &Default::default());
    let hub = s.hosts["h2"];
    assert_eq!(share.environments[0].hub, Some(hub));
    let peers: Vec<_> = share.peers.iter().map(|p| p.address).collect();
    assert_eq!(peers, [hub], "h1 links to the hub alone");
}

#[test]
fn an_ipv6_underlay_parses() {
    let text = SPEC
        .replace("10.250.0.1", "fd00:250::1")
        .replace("10.250.0.2", "fd00:250::2");
    let s = Spec::parse(&text).unwrap();
    assert_eq!(s.hosts["h2"], "fd00:250::2".parse::<IpAddr>().unwrap());
}
