//! The supervisor with real processes: restarts with growing delays, given-up and
//! `restart`, stop grace then SIGKILL of the whole group, adoption after kill -9,
//! one supervisor per state dir, live profile reload.

use crate::util::{alive, read_pids, text, wait_for, Env};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

fn crash_profile(failures: u32) -> String {
    format!(
        "name: crashy\nsupervisor:\n  backoff: {{initial: 200ms, max: 2s, factor: 2.0, jitter: 0.0}}\n  give_up: {{failures: {failures}, window: 1m}}\nservices:\n  crash:\n    command: [sh, -c, 'date +%s.%N >> {{{{state_dir}}}}/starts; echo boom; exit 3']\n"
    )
}

#[test]
fn crashing_service_restarts_with_growing_delays_then_gives_up_and_restart_clears_it() {
    let env = Env::new();
    env.write_profile(&crash_profile(5));
    env.up_detached();
    let s = wait_for("given-up", T, || {
        let s = env.service("crash");
        (s["state"] == "given-up").then_some(s)
    });
    assert_eq!(s["restarts"], 4, "{s}");
    assert_eq!(s["last_exit"], "exit code 3");
    assert!(
        s["detail"]
            .as_str()
            .unwrap()
            .contains("5 failures within 1m"),
        "{s}"
    );
    let starts: Vec<f64> = std::fs::read_to_string(env.state().join("starts"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 5);
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // Backoff 0.2 s, 0.4 s, 0.8 s, 1.6 s (no jitter): each gap at least its delay, and growing.
    for (i, g) in gaps.iter().enumerate() {
        let want = 0.2 * 2f64.powi(i as i32);
        assert!(
            *g >= want * 0.95,
            "gap {i} = {g:.3}s, expected >= {want}s; gaps {gaps:?}"
        );
    }
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "delays grow: {gaps:?}"
    );
    // The log file holds the service's output.
    assert!(env.ok(&["logs", "crash", "-n", "2"]).contains("boom"));
    // Given up means no more starts.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        std::fs::read_to_string(env.state().join("starts"))
            .unwrap()
            .lines()
            .count(),
        5
    );
    // `restart` clears given-up and starts it again; the CLI goes through chainctl's API
    // (the supervisor is running and serves one).
    assert!(env.ok(&["restart", "crash"]).contains("restarting crash"));
    assert!(
        env.supervisor_log()
            .contains("restart requested through the API"),
        "{}",
        env.supervisor_log()
    );
    wait_for("a new start after restart", T, || {
        (std::fs::read_to_string(env.state().join("starts"))
            .unwrap()
            .lines()
            .count()
            > 5)
        .then_some(())
    });
    let s = env.service("crash");
    assert_ne!(s["state"], "given-up", "{s}");
    env.ok(&["down"]);
}

#[test]
fn prevent_exit_code_gives_up_at_once() {
    let env = Env::new();
    env.write_profile(
        "name: cfg\nservices:\n  bad:\n    command: [sh, -c, 'echo config error >&2; exit 78']\n",
    );
    env.up_detached();
    let s = wait_for("given-up", T, || {
        let s = env.service("bad");
        (s["state"] == "given-up").then_some(s)
    });
    assert_eq!(s["restarts"], 0);
    assert!(
        s["detail"]
            .as_str()
            .unwrap()
            .contains("exit code 78 is in restart.prevent_exit_codes"),
        "{s}"
    );
    assert!(
        env.ok(&["logs", "bad"]).contains("config error"),
        "stderr goes to the log too"
    );
}

#[test]
fn child_ignoring_sigterm_is_killed_after_its_grace_with_its_grandchildren() {
    let env = Env::new();
    env.write_profile(
        "name: stubborn\nservices:\n  stubborn:\n    command: [sh, -c, 'trap \"\" TERM; sleep 1000 & echo $! >> {{state_dir}}/pids; sleep 1000 & echo $! >> {{state_dir}}/pids; echo $$ >> {{state_dir}}/pids; wait; wait']\n    stop: {grace: 2s}\n",
    );
    env.up_detached();
    let pids = wait_for("three pids", T, || {
        Some(read_pids(&env.state().join("pids"))).filter(|p| p.len() == 3)
    });
    assert!(pids.iter().all(|p| alive(*p)));
    let t0 = Instant::now();
    env.ok(&["down"]);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "SIGKILL came before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(15), "stop took {took:?}");
    for p in &pids {
        assert!(!alive(*p), "pid {p} survived the stop");
    }
    let log = env.supervisor_log();
    assert!(
        log.contains("did not stop within its grace: SIGKILL to its process group"),
        "{log}"
    );
}

#[test]
fn kill_9_of_chainctl_then_up_adopts_the_survivors() {
    let env = Env::new();
    env.write_profile(&format!(
        "name: adopt\nports: {{start: 21000, end: 21099}}\nservices:\n  web:\n    command: {}\n    ports: {{http: auto}}\n  worker:\n    command: [sleep, infinity]\n    depends_on: [web]\n",
        crate::util::listener_cmd("{{port.http}}")
    ));
    env.up_detached();
    let before = env.status();
    let sup = before["supervisor_pid"].as_i64().unwrap();
    let pid_of = |st: &serde_json::Value, n: &str| crate::util::pid_of(st, n).unwrap();
    let (web, worker) = (pid_of(&before, "web"), pid_of(&before, "worker"));
    let port = before["services"][0]["ports"]["http"]["port"]
        .as_i64()
        .unwrap();
    // A second `up` is refused while the first runs, naming its pid.
    let second = env.run(&["up", "--detach"]);
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains(&format!(
            "another chainctl supervisor (pid {sup}) already runs"
        )),
        "{}",
        text(&second.stderr)
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("supervisor gone", T, || (!alive(sup)).then_some(()));
    assert!(
        alive(web) && alive(worker),
        "services must survive their supervisor"
    );
    let st = env.status();
    assert!(st["supervisor_pid"].is_null());
    assert!(
        st["services"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "running"),
        "{st}"
    );

    env.up_detached();
    let after = env.status();
    assert_ne!(after["supervisor_pid"].as_i64().unwrap(), sup);
    assert_eq!(pid_of(&after, "web"), web, "adopted, not restarted");
    assert_eq!(pid_of(&after, "worker"), worker);
    assert_eq!(
        after["services"][0]["ports"]["http"]["port"]
            .as_i64()
            .unwrap(),
        port,
        "same port"
    );
    for s in after["services"].as_array().unwrap() {
        assert_eq!(s["restarts"], 0, "{s}");
        assert_eq!(s["state"], "ready", "{s}");
    }
    assert!(env.supervisor_log().contains("adopted running service"));
    // The adopted service is still supervised: kill it and it comes back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let s = wait_for("worker restarted", T, || {
        let s = env.service("worker");
        (s["pid"].as_i64().is_some_and(|p| p != worker) && s["state"] == "ready").then_some(s)
    });
    assert_eq!(s["restarts"], 1);
    assert_eq!(s["last_exit"], "exited while adopted (status unknown)");
    env.ok(&["down"]);
    assert!(!alive(web));
}

#[test]
fn a_service_that_died_while_chainctl_was_down_is_noticed_and_restarted() {
    let env = Env::new();
    env.write_profile("name: died\nservices:\n  s:\n    command: [sleep, infinity]\n");
    env.up_detached();
    let st = env.status();
    let (sup, pid) = (
        st["supervisor_pid"].as_i64().unwrap(),
        st["services"][0]["pid"].as_i64().unwrap(),
    );
    for p in [sup, pid] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    wait_for("both gone", T, || {
        (!alive(sup) && !alive(pid)).then_some(())
    });
    env.up_detached();
    let s = wait_for("restarted", T, || {
        let s = env.service("s");
        (s["state"] == "ready").then_some(s)
    });
    assert_ne!(s["pid"].as_i64().unwrap(), pid);
    assert!(env
        .supervisor_log()
        .contains("died while chainctl was not running"));
}

#[test]
fn foreground_up_prints_progress_and_table_and_ctrl_c_stops_everything() {
    let env = Env::new();
    env.write_profile(&format!(
        "name: fg\nports: {{start: 21100, end: 21199}}\nservices:\n  web:\n    command: {}\n    ports: {{http: auto}}\n  after:\n    command: [sleep, infinity]\n    depends_on: [web]\n",
        crate::util::listener_cmd("{{port.http}}")
    ));
    let child = env.up_foreground();
    let st = wait_for("both ready", T, || {
        let o = env.run(&["status", "--output", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
        v["services"]
            .as_array()?
            .iter()
            .all(|s| s["state"] == "ready")
            .then_some(v)
    });
    let pids: Vec<i64> = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["pid"].as_i64().unwrap())
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("SERVICE") && stdout.contains("all 2 services are ready"),
        "{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("web: ready") && stderr.contains("after: waiting"),
        "{stderr}"
    );
    // Dependents stop first: `after` before `web`.
    let a = stderr
        .find("stopping service=after")
        .expect("after stopped");
    let w = stderr.find("stopping service=web").expect("web stopped");
    assert!(a < w, "dependency order on stop");
    for p in pids {
        assert!(!alive(p));
    }
}

#[test]
fn profile_edits_are_reconciled_live_and_invalid_edits_refused() {
    let env = Env::new();
    let base = "name: live\nservices:\n  keep:\n    command: [sleep, infinity]\n  change:\n    command: [sleep, '1001']\n  drop:\n    command: [sleep, infinity]\n";
    env.write_profile(base);
    env.up_detached();
    let pid = |n: &str| env.service(n)["pid"].as_i64();
    let (keep, change, drop) = (
        pid("keep").unwrap(),
        pid("change").unwrap(),
        pid("drop").unwrap(),
    );

    // An invalid edit is refused; everything keeps running as it was.
    env.write_profile("name: live\nservices:\n  keep:\n    comand: [sleep, infinity]\n");
    wait_for("refusal logged", T, || {
        env.supervisor_log()
            .contains("profile change refused")
            .then_some(())
    });
    assert!(env.supervisor_log().contains("unknown field `comand`"));
    assert_eq!(
        (pid("keep"), pid("change"), pid("drop")),
        (Some(keep), Some(change), Some(drop))
    );

    // A valid edit: `change` changes, `drop` goes, `new` comes, `keep` is untouched.
    env.write_profile("name: live\nservices:\n  keep:\n    command: [sleep, infinity]\n  change:\n    command: [sleep, '1002']\n  new:\n    command: [sleep, infinity]\n");
    wait_for("reconciled", T, || {
        let st = env.status();
        let names: Vec<&str> = st["services"]
            .as_array()?
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        let ready = st["services"]
            .as_array()?
            .iter()
            .all(|s| s["state"] == "ready");
        (ready && names.len() == 3 && names.contains(&"new") && !names.contains(&"drop"))
            .then_some(())
    });
    assert_eq!(pid("keep"), Some(keep), "untouched service keeps running");
    assert_ne!(pid("change"), Some(change), "changed service restarted");
    assert!(!alive(change) && !alive(drop));
    env.ok(&["down"]);
}

#[test]
fn status_shows_cpu_memory_ports_and_down_purge_needs_yes() {
    let env = Env::new();
    env.write_profile(&format!("name: st\nports: {{start: 21200, end: 21299}}\nservices:\n  web:\n    command: {}\n    ports: {{http: auto, p2p: {{protocol: both}}}}\n    ready_ports: [http]\n", crate::util::listener_cmd("{{port.http}}")));
    env.up_detached();
    let s = env.service("web");
    assert_eq!(s["state"], "ready");
    assert_eq!(s["kind"], "command");
    assert_eq!(s["backend"], "process");
    assert!(s["memory_bytes"].as_u64().unwrap() > 100_000, "{s}");
    assert!(s["cpu_percent"].is_number(), "{s}");
    assert_eq!(s["ports"]["p2p"]["protocol"], "both");
    let table = env.ok(&["status"]);
    assert!(
        table.contains("web") && table.contains("ready") && table.contains("p2p="),
        "{table}"
    );
    let refused = env.run(&["down", "--purge"]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("add --yes to confirm"));
    assert!(
        env.state().join("data").exists(),
        "nothing deleted without --yes"
    );
    env.ok(&["down", "--purge", "--yes"]);
    assert!(!env.state().exists(), "purge removes the state dir");
}

#[test]
fn logs_rotate_by_size_and_follow_sees_new_lines() {
    let env = Env::new();
    env.write_profile(
        "name: chatty\nsupervisor:\n  logs: {max_bytes: 4096, keep: 2}\nservices:\n  chatty:\n    command: [sh, -c, 'i=0; while [ $i -lt 400 ]; do echo line-$i-0123456789012345678901234567890123456789; i=$((i+1)); done; exec sleep infinity']\n",
    );
    env.up_detached();
    let log = env.state().join("logs/chatty.log");
    wait_for("rotation", T, || {
        (log.with_extension("log.2").exists()
            && std::fs::read_to_string(&log).ok()?.contains("line-399-"))
        .then_some(())
    });
    assert!(!log.with_extension("log.3").exists(), "keep: 2");
    for f in [
        log.clone(),
        log.with_extension("log.1"),
        log.with_extension("log.2"),
    ] {
        assert!(
            std::fs::metadata(&f).unwrap().len() <= 4096 + 64 * 1024,
            "{f:?}"
        );
    }
    let tail = env.ok(&["logs", "chatty", "-n", "1"]);
    assert!(tail.trim().starts_with("line-399-"), "{tail}");
    let bad = env.run(&["logs", "nosuch"]);
    assert!(text(&bad.stderr).contains("no service named `nosuch`; known: chatty"));
}

#[test]
fn processes_left_in_the_group_are_killed_and_escaped_ones_stopped_at_down() {
    let env = Env::new();
    env.write_profile(
        "name: orphans\nsupervisor:\n  backoff: {initial: 30s}\nservices:\n  leaky:\n    command: [sh, -c, 'sleep 1000 & echo $! > {{state_dir}}/left; exit 1']\n  escaper:\n    command: [sh, -c, 'setsid sleep 1001 & echo $! > {{state_dir}}/escaped; exec sleep infinity']\n",
    );
    env.up_detached();
    let left = wait_for("left pid", T, || {
        read_pids(&env.state().join("left")).first().copied()
    });
    let escaped = wait_for("escaped pid", T, || {
        read_pids(&env.state().join("escaped")).first().copied()
    });
    // The main process of `leaky` exited: what it left in its group is killed.
    wait_for("leftover killed", T, || (!alive(left)).then_some(()));
    assert!(env
        .supervisor_log()
        .contains("leaving processes in its group"));
    // A process that left its group (setsid) is stopped when everything stops.
    assert!(alive(escaped));
    env.ok(&["down"]);
    wait_for("escaped stopped", T, || (!alive(escaped)).then_some(()));
    assert!(env
        .supervisor_log()
        .contains("stopping processes that left their service's process group"));
}

#[test]
fn after_kill_9_a_changed_service_restarts_and_a_dead_one_with_leftovers_is_cleaned_up() {
    let env = Env::new();
    let yaml = |arg: &str| {
        let web = r#"python3 -c "import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\", {{port.http}})); s.listen(); time.sleep(100000)" & echo $! > {{state_dir}}/web; wait"#;
        format!(
            "name: crash\nports: {{start: 21300, end: 21399}}\nservices:\n  web:\n    command: [sh, -c, '{web}']\n    ports: {{http: auto}}\n  same:\n    command: [sleep, infinity]\n  edited:\n    command: [sleep, '{arg}']\n"
        )
    };
    env.write_profile(&yaml("1000"));
    env.up_detached();
    let st = env.status();
    let pid_of = crate::util::pid_of;
    let (sup, web, same, edited) = (
        st["supervisor_pid"].as_i64().unwrap(),
        pid_of(&st, "web").unwrap(),
        pid_of(&st, "same").unwrap(),
        pid_of(&st, "edited").unwrap(),
    );
    let port = env.service("web")["ports"]["http"]["port"]
        .as_i64()
        .unwrap();
    let listener = read_pids(&env.state().join("web"))[0];
    // chainctl dies; then `web`'s main process dies too, leaving its listener (same group);
    // and the profile changes `edited`.
    for p in [sup, web] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    wait_for("gone", T, || (!alive(sup) && !alive(web)).then_some(()));
    assert!(alive(listener), "the listener outlives its main process");
    env.write_profile(&yaml("2000"));
    env.up_detached();
    let st = wait_for("settled", T, || {
        let st = env.status();
        st["services"]
            .as_array()?
            .iter()
            .all(|s| s["state"] == "ready")
            .then_some(st)
    });
    assert_eq!(pid_of(&st, "same"), Some(same), "untouched service adopted");
    assert_ne!(
        pid_of(&st, "edited"),
        Some(edited),
        "changed service restarted"
    );
    assert!(!alive(edited));
    assert!(
        !alive(listener),
        "the dead service's leftover was stopped before restarting it"
    );
    assert_eq!(
        env.service("web")["ports"]["http"]["port"]
            .as_i64()
            .unwrap(),
        port,
        "same port, not moved"
    );
    assert_eq!(env.service("web")["restarts"], 1);
    let log = env.supervisor_log();
    assert!(
        log.contains("its definition changed while chainctl was down"),
        "{log}"
    );
    assert!(
        log.contains("died while chainctl was not running, leaving processes in its group"),
        "{log}"
    );
}

/// Test hooks live in debug builds only (issue 27): the release chainctl, started with
/// the fault variable set, passes it to none of its services (a debug build does: the
/// network tests use it), alongside the variables it does pass on.
#[test]
fn a_release_build_passes_no_test_hook_to_its_services() {
    let env = Env::new();
    env.write_profile(
        "name: rel\nservices:\n  show:\n    command: [sh, -c, 'env > {{data_dir}}/env.txt; exec sleep 600']\n",
    );
    let release = crate::util::static_binary();
    let run = |args: &[&str]| {
        std::process::Command::new(&release)
            .arg("--profile")
            .arg(env.profile())
            .arg("--state-dir")
            .arg(env.state())
            .args(args)
            .env("CHAINCTL_TEST_FAULT", "bad-state-root:val-1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let o = run(&["up", "--detach"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let file = env.state().join("data/show/env.txt");
    let seen = wait_for("the service's environment", Duration::from_secs(20), || {
        std::fs::read_to_string(&file)
            .ok()
            .filter(|t| t.contains("CHAINCTL_SERVICE="))
    });
    let _ = run(&["down"]);
    assert!(
        seen.contains("CHAINCTL_SERVICE=show") && seen.contains("PATH="),
        "{seen}"
    );
    assert!(!seen.contains("CHAINCTL_TEST_FAULT"), "{seen}");
}
