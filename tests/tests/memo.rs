//! What each CPU keeps in the datapath for itself, driven through the real port and
//! underlay programs with BPF_PROG_TEST_RUN, on one CPU, against a lab host's live maps:
//! - its memory of forwarding-table lookups (the eBPF `memo`): a change the datapath is
//!   told of (violind's count in `FDB_EPOCH`, or a program's learning write) is seen by
//!   the next frame, and one it is not told of (a hand edit) only once the memory ages;
//!   a frame's own learning write is seen by its own destination lookup (a hairpin);
//! - its cells of VM pair counts (`PAIR_CELLS`): each frame is counted once, in the
//!   pair's cell or, when another pair holds it, in `PAIR_TRAFFIC`, and violind's
//!   figures add both.
use std::{path::Path, thread::sleep, time::Duration};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf, EbpfLoader,
};
use dataplane_common::{
    counters::Counter,
    maps::{
        names, pair_cell_index, programs, FdbEntry, FdbKey, PairCell, PairKey, PeerInfo, PortInfo,
        FDB_EPOCH_LEARNED, FDB_EPOCH_PLACED,
    },
    packet::{v4_mapped, Tunnel},
};
use violin_testbed::{
    e2e::{counter, lab},
    frames::{sk_buff, udp_frame, vxlan, MIN_FRAME},
    lab::mac_string,
    sys::{ifindex_of, in_netns, mac_of},
};

const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
/// A MAC no VM of the lab has: only this test places it.
const X: [u8; 6] = [0x02, 0x6d, 0x65, 0x6d, 0x6f, 0x01];

fn map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(dir: &Path, name: &str) -> T {
    let data = MapData::from_pin(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    T::try_from(aya::maps::Map::from_map_data(data).unwrap()).unwrap()
}

/// Keeps this thread on the CPU it runs on (one it may use): the memories are per CPU.
fn stay_on_this_cpu() {
    // SAFETY: sched_getcpu takes nothing; a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity take it by pointer for this thread (pid 0).
    unsafe {
        let cpu = libc::sched_getcpu();
        assert!(
            cpu >= 0,
            "sched_getcpu: {}",
            std::io::Error::last_os_error()
        );
        let cpu = cpu as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Counts a change of the table as violind does after one (`Maps::fdb_changed`).
fn count_change(epoch: &mut Array<MapData, u64>) {
    let n = epoch.get(&FDB_EPOCH_PLACED, 0).unwrap();
    epoch.set(FDB_EPOCH_PLACED, n + 1, 0).unwrap();
}

/// The datapath's object, loaded on the maps violind pinned in `dir`, with the TC
/// programs ready for test runs.
fn load(dir: &Path) -> Ebpf {
    let object = violin_testbed::target_dir().join("ebpf/dataplane-ebpf");
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(dir)
        .override_global("AYA_LOG_LEVEL", &0u8, false)
        .load_file(&object)
        .unwrap_or_else(|e| panic!("loading {}: {e}", object.display()));
    for name in [programs::PORT_TC, programs::UNDERLAY_TC] {
        let p: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
        p.load().unwrap();
    }
    ebpf
}

/// Runs `prog` once on `frame` arriving on `ifindex`; the verdict and the frame it left.
fn run(ebpf: &Ebpf, prog: &str, frame: &[u8], ifindex: u32) -> (u32, usize) {
    let p: &SchedClassifier = ebpf.program(prog).unwrap().try_into().unwrap();
    let ctx = sk_buff(ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.ctx_in = Some(&ctx);
    opts.data_out = Some(&mut out);
    let r = p.test_run(opts).expect("BPF_PROG_TEST_RUN");
    (r.return_value, r.data_size_out as usize)
}

#[test]
fn a_counted_change_is_seen_at_once_and_a_hand_edit_once_the_memory_ages() {
    let lab = lab("mem", |_| {});
    let (h0, h1) = (&lab.hosts[0], &lab.hosts[1]);
    let a = lab.vm(0, 0, 0).clone();
    let a2 = lab.vm(0, 0, 1).clone();
    let dir = h0.pins().join("maps");
    let tunnel = Tunnel {
        src_mac: mac_of(&h1.ns, "ul0").unwrap(),
        dst_mac: mac_of(&h0.ns, "ul0").unwrap(),
        src_ip: h1.underlay_v4().octets(),
        dst_ip: h0.underlay_v4().octets(),
    };
    let port_if = ifindex_of(&h0.ns, &a.port).unwrap();
    let a2_if = ifindex_of(&h0.ns, &a2.port).unwrap();
    let ul_if = ifindex_of(&h0.ns, "ul0").unwrap();
    in_netns(&h0.ns, || {
        stay_on_this_cpu();
        let ebpf = load(&dir);
        let mut fdb: HashMap<_, FdbKey, FdbEntry> = map(&dir, names::FDB);
        let mut epoch: Array<_, u64> = map(&dir, names::FDB_EPOCH);
        let ports: HashMap<_, u32, PortInfo> = map(&dir, names::PORTS);
        let peers: HashMap<_, [u8; 16], PeerInfo> = map(&dir, names::PEERS);
        let peer = v4_mapped(h1.underlay_v4().octets());
        let remote = FdbEntry::remote(peer, peers.get(&peer, 0).unwrap().slot);
        let local = FdbEntry::local(a2_if, ports.get(&a2_if, 0).unwrap().slot);
        let key = FdbKey::new(a.vni, X);
        let to_x = udp_frame((a.mac, a.ip.octets()), (X, [10, 99, 0, 1]), MIN_FRAME);
        let encapsulated = (TC_ACT_REDIRECT, MIN_FRAME + 50);
        let delivered = (TC_ACT_REDIRECT, MIN_FRAME);
        // X placed behind host 1 and counted: the port program sends there and remembers.
        let remember_remote = |fdb: &mut HashMap<_, FdbKey, FdbEntry>, epoch: &mut _| {
            fdb.insert(key, remote, 0).unwrap();
            count_change(epoch);
            assert_eq!(run(&ebpf, programs::PORT_TC, &to_x, port_if), encapsulated);
        };

        // Remembered, then edited by hand: the CPU still sends where it remembers. (A
        // learning write elsewhere in the lab moves the epoch and ends the memory
        // early, so this is tried a few times.)
        let stale = (0..5).any(|_| {
            remember_remote(&mut fdb, &mut epoch);
            fdb.insert(key, local, 0).unwrap();
            run(&ebpf, programs::PORT_TC, &to_x, port_if) == encapsulated
        });
        assert!(
            stale,
            "the port program read the table at every frame: no memory"
        );

        // violind's count moves: the next frame reads the table.
        count_change(&mut epoch);
        assert_eq!(run(&ebpf, programs::PORT_TC, &to_x, port_if), delivered);

        // A frame from X through the tunnel: the underlay program learns X behind host 1,
        // counts its write, and the port program's next frame follows it.
        let learned = epoch.get(&FDB_EPOCH_LEARNED, 0).unwrap();
        let from_x = vxlan(
            &tunnel,
            a.vni,
            &udp_frame((X, [10, 99, 0, 1]), (a.mac, a.ip.octets()), MIN_FRAME),
        );
        let (verdict, _) = run(&ebpf, programs::UNDERLAY_TC, &from_x, ul_if);
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "the underlay program did not deliver"
        );
        assert_eq!(fdb.get(&key, 0).unwrap(), remote);
        assert!(epoch.get(&FDB_EPOCH_LEARNED, 0).unwrap() > learned);
        assert_eq!(run(&ebpf, programs::PORT_TC, &to_x, port_if), encapsulated);

        // A hand edit nobody counts is seen once the memory ages (100 jiffies, at most a
        // second at HZ 100): shown only by a try in which the lab's own learning did not
        // move the epoch meanwhile.
        let epochs = |e: &Array<MapData, u64>| {
            [FDB_EPOCH_LEARNED, FDB_EPOCH_PLACED].map(|i| e.get(&i, 0).unwrap())
        };
        let aged = (0..5).any(|_| {
            remember_remote(&mut fdb, &mut epoch);
            let before = epochs(&epoch);
            fdb.insert(key, local, 0).unwrap();
            sleep(Duration::from_millis(1100));
            let seen = run(&ebpf, programs::PORT_TC, &to_x, port_if);
            if epochs(&epoch) != before {
                return false;
            }
            assert_eq!(seen, delivered, "a memory outlived its age bound");
            true
        });
        assert!(aged, "the lab's learning moved the epoch in every try");
        fdb.remove(&key).unwrap();
        Ok(())
    })
    .unwrap();
}

/// A frame whose destination is its own source, from a port other than the one this CPU
/// remembers that source behind: its learning moves the source to this port, and its
/// destination lookup must find it there (a hairpin, dropped), not the memory of where it
/// was (which would deliver it to the other VM).
#[test]
fn a_frame_to_its_own_source_finds_where_its_learning_put_it() {
    let lab = lab("hpn", |_| {});
    let h0 = &lab.hosts[0];
    let a = lab.vm(0, 0, 0).clone();
    let a2 = lab.vm(0, 0, 1).clone();
    let dir = h0.pins().join("maps");
    let port_if = ifindex_of(&h0.ns, &a.port).unwrap();
    let a2_if = ifindex_of(&h0.ns, &a2.port).unwrap();
    let hairpins = || counter(&lab.stats(0).unwrap(), "/drops/hairpin");
    let before = hairpins();
    const TRIES: u64 = 5;
    let shown = in_netns(&h0.ns, || {
        stay_on_this_cpu();
        let ebpf = load(&dir);
        let mut fdb: HashMap<_, FdbKey, FdbEntry> = map(&dir, names::FDB);
        let mut epoch: Array<_, u64> = map(&dir, names::FDB_EPOCH);
        let ports: HashMap<_, u32, PortInfo> = map(&dir, names::PORTS);
        let behind_a2 = FdbEntry::local(a2_if, ports.get(&a2_if, 0).unwrap().slot);
        let key = FdbKey::new(a.vni, X);
        let to_x = udp_frame((a.mac, a.ip.octets()), (X, [10, 99, 0, 1]), MIN_FRAME);
        let hairpin = udp_frame((X, [10, 99, 0, 1]), (X, [10, 99, 0, 1]), MIN_FRAME);
        let epochs = |e: &Array<MapData, u64>| {
            [FDB_EPOCH_LEARNED, FDB_EPOCH_PLACED].map(|i| e.get(&i, 0).unwrap())
        };
        // A try shows the lookup's choice only if nothing but the hairpin's own learning
        // moved the epoch after this CPU remembered X behind A2: otherwise the memory was
        // forgotten anyway. The lab's own learning may move it, so a few tries.
        let mut shown = 0;
        for _ in 0..TRIES {
            fdb.insert(key, behind_a2, 0).unwrap();
            count_change(&mut epoch);
            // Twice: A's first frame may learn A's own MAC, which leaves that frame's
            // lookup without a memory; the second remembers X as of `then`.
            let mut then = [0; 2];
            for _ in 0..2 {
                then = epochs(&epoch);
                assert_eq!(
                    run(&ebpf, programs::PORT_TC, &to_x, port_if),
                    (TC_ACT_REDIRECT, MIN_FRAME),
                    "a frame to X, placed behind A2, was not delivered"
                );
            }
            let (verdict, _) = run(&ebpf, programs::PORT_TC, &hairpin, port_if);
            assert_eq!(
                verdict, TC_ACT_SHOT,
                "a frame from X to X on A's port was not dropped as a hairpin"
            );
            assert_eq!(
                fdb.get(&key, 0).unwrap(),
                FdbEntry::local(port_if, ports.get(&port_if, 0).unwrap().slot),
                "the hairpin frame's source was not learned behind A's port"
            );
            if epochs(&epoch) == [then[0] + 1, then[1]] {
                shown += 1;
            }
        }
        fdb.remove(&key).unwrap();
        count_change(&mut epoch);
        Ok(shown)
    })
    .unwrap();
    assert!(shown > 0, "the lab's learning moved the epoch in every try");
    assert!(
        hairpins() >= before + TRIES,
        "violind stats counts fewer than {TRIES} hairpin drops"
    );
}

#[test]
fn a_pairs_frames_are_counted_once_in_its_cell_or_in_the_hash_map() {
    let lab = lab("pcl", |_| {});
    let (h0, h1) = (&lab.hosts[0], &lab.hosts[1]);
    let a = lab.vm(0, 0, 0).clone();
    let dir = h0.pins().join("maps");
    let port_if = ifindex_of(&h0.ns, &a.port).unwrap();
    let (n1, n2) = (3u64, 5u64);
    let (p1, p2, cpu) = in_netns(&h0.ns, || {
        stay_on_this_cpu();
        // SAFETY: sched_getcpu takes nothing.
        let cpu = unsafe { libc::sched_getcpu() } as usize;
        let ebpf = load(&dir);
        let mut fdb: HashMap<_, FdbKey, FdbEntry> = map(&dir, names::FDB);
        let mut epoch: Array<_, u64> = map(&dir, names::FDB_EPOCH);
        let cells: PerCpuArray<_, PairCell> = map(&dir, names::PAIR_CELLS);
        let traffic: PerCpuHashMap<_, PairKey, Counter> = map(&dir, names::PAIR_TRAFFIC);
        let peers: HashMap<_, [u8; 16], PeerInfo> = map(&dir, names::PEERS);
        let peer = v4_mapped(h1.underlay_v4().octets());
        let remote = FdbEntry::remote(peer, peers.get(&peer, 0).unwrap().slot);

        // Two addresses no VM has, to which A's pairs share a position no pair holds on
        // this CPU: the first to send takes the cell, the other goes to the hash map.
        let y = |i: u16| [0x02, 0x70, 0x63, 0x6c, (i >> 8) as u8, i as u8];
        let pair = |i: u16| PairKey::new(a.vni, a.mac, y(i));
        let free = |i: u16| cells.get(&pair_cell_index(&pair(i)), 0).unwrap()[cpu].is_empty();
        let first = (1..u16::MAX).find(|&i| free(i)).expect("no free pair cell");
        let second = (first + 1..u16::MAX)
            .find(|&i| pair_cell_index(&pair(i)) == pair_cell_index(&pair(first)))
            .unwrap();
        for i in [first, second] {
            fdb.insert(FdbKey::new(a.vni, y(i)), remote, 0).unwrap();
        }
        count_change(&mut epoch);
        for (i, n) in [(first, n1), (second, n2)] {
            let frame = udp_frame((a.mac, a.ip.octets()), (y(i), [10, 99, 0, 2]), MIN_FRAME);
            for _ in 0..n {
                assert_eq!(
                    run(&ebpf, programs::PORT_TC, &frame, port_if),
                    (TC_ACT_REDIRECT, MIN_FRAME + 50)
                );
            }
        }
        let cell = cells.get(&pair_cell_index(&pair(first)), 0).unwrap()[cpu];
        assert_eq!(cell.key, pair(first));
        assert_eq!(
            cell.traffic,
            Counter {
                packets: n1,
                bytes: n1 * MIN_FRAME as u64
            }
        );
        let hashed = traffic
            .get(&pair(second), 0)
            .expect("the pair in PAIR_TRAFFIC")[cpu];
        assert_eq!(hashed.packets, n2);
        for i in [first, second] {
            fdb.remove(&FdbKey::new(a.vni, y(i))).unwrap();
        }
        count_change(&mut epoch);
        Ok((pair(first), pair(second), cpu))
    })
    .unwrap();

    // violind's figures add both places: each pair has what it sent, once.
    let stats = lab.stats(0).unwrap();
    let len = MIN_FRAME as u64;
    assert_eq!(sent(&stats, &p1), Some((n1, n1 * len)), "{stats:#}");
    assert_eq!(sent(&stats, &p2), Some((n2, n2 * len)), "{stats:#}");
    assert!(
        stats["map_entries"]["pair_cells"].as_u64() >= Some(1),
        "violind stats shows no pair cell held: {}",
        stats["map_entries"]
    );

    // The sending VM leaves the host (its port goes): the cell its pair held is emptied
    // for another pair; the hash map's entry stays until the map ages it out.
    let original = lab.config_for(0);
    let without_a = original
        .replace(&format!("\"{}\", ", a.port), "")
        .replace(&format!(", \"{}\"", a.port), "");
    assert!(!without_a.contains(&a.port), "{without_a}");
    lab.reload(0, &without_a).unwrap();
    let stats = lab.stats(0).unwrap();
    assert_eq!(sent(&stats, &p1), None, "{stats:#}");
    assert_eq!(sent(&stats, &p2), Some((n2, n2 * len)), "{stats:#}");
    let cells: PerCpuArray<_, PairCell> = map(&dir, names::PAIR_CELLS);
    let cell = cells.get(&pair_cell_index(&p1), 0).unwrap()[cpu];
    assert!(
        cell.is_empty(),
        "a pair of a VM gone kept its cell: {cell:?}"
    );

    // The environment leaves the host (it comes back under another VNI): its pairs'
    // counts go from the hash map too.
    let vni = a.vni.to_string();
    let renumbered = without_a
        .replace(&format!("vni = {vni}"), "vni = 1077")
        .replace(&format!("vnis = [{vni}]"), "vnis = [1077]");
    assert!(!renumbered.contains(&vni), "{renumbered}");
    lab.reload(0, &renumbered).unwrap();
    let stats = lab.stats(0).unwrap();
    assert_eq!(sent(&stats, &p2), None, "{stats:#}");
    let traffic: PerCpuHashMap<_, PairKey, Counter> = map(&dir, names::PAIR_TRAFFIC);
    assert!(traffic.get(&p2, 0).is_err());
}

/// What `violind stats --json` says pair `p` sent: (packets, bytes), if it lists the pair.
fn sent(stats: &serde_json::Value, p: &PairKey) -> Option<(u64, u64)> {
    let row = stats["pairs"].as_array()?.iter().find(|r| {
        r["vni"] == p.vni && r["src"] == mac_string(&p.src) && r["dst"] == mac_string(&p.dst)
    })?;
    Some((
        row["traffic"]["packets"].as_u64()?,
        row["traffic"]["bytes"].as_u64()?,
    ))
}
