//! A real terminal for tests that drive the command-line tools as an operator does: a
//! tmux session running an interactive bash, keys typed with `send-keys`, the screen read
//! back with `capture-pane`.
use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub struct Terminal {
    session: String,
    /// Commands typed so far: each one's end is marked with its number.
    typed: usize,
}

fn tmux(args: &[&str]) -> Result<String> {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .context("running tmux (apt install tmux)")?;
    if !out.status.success() {
        bail!(
            "tmux {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Terminal {
    /// Opens a 200x50 terminal whose shell runs in network namespace `netns`, in `dir`,
    /// with `env` set and `bin` first on its PATH.
    pub fn open(
        session: &str,
        netns: &str,
        dir: &Path,
        bin: &Path,
        env: &[(&str, String)],
    ) -> Result<Terminal> {
        let _ = tmux(&["kill-session", "-t", session]);
        let path = format!(
            "PATH={}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // Scrollback for long outputs: set before the pane exists, which it applies to.
        let mut cmd: Vec<String> = vec![
            "set-option".into(),
            "-g".into(),
            "history-limit".into(),
            "20000".into(),
            ";".into(),
            "new-session".into(),
            "-d".into(),
            "-s".into(),
            session.into(),
            "-x".into(),
            "200".into(),
            "-y".into(),
            "50".into(),
            "-c".into(),
            dir.display().to_string(),
            "--".into(),
            "ip".into(),
            "netns".into(),
            "exec".into(),
            netns.into(),
            "env".into(),
            path,
            "PS1=$ ".into(),
            "TERM=xterm".into(),
        ];
        cmd.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        cmd.extend(["bash", "--norc", "--noprofile", "-i"].map(String::from));
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        tmux(&args)?;
        Ok(Terminal {
            session: session.into(),
            typed: 0,
        })
    }

    /// Types `line` and Enter, then waits (up to `within`) until it ends; returns its exit
    /// status and what it printed, as the screen shows it.
    pub fn run(&mut self, line: &str, within: Duration) -> Result<(i32, String)> {
        self.typed += 1;
        let n = self.typed;
        // The markers are echoed lines of their own, never the line typed.
        let typed = format!("echo start-{n}; {line}; echo \"[$?] end-{n}\"");
        tmux(&["send-keys", "-t", &self.session, "-l", &typed])?;
        tmux(&["send-keys", "-t", &self.session, "Enter"])?;
        let start = format!("start-{n}");
        let end = format!("] end-{n}");
        let deadline = Instant::now() + within;
        loop {
            let all = self.scrollback()?;
            let lines: Vec<&str> = all.lines().map(str::trim_end).collect();
            let from = lines.iter().rposition(|l| *l == start);
            let to = lines
                .iter()
                .rposition(|l| l.starts_with('[') && l.ends_with(&end));
            if let (Some(a), Some(b)) = (from, to) {
                let code = lines[b][1..lines[b].len() - end.len()]
                    .parse()
                    .with_context(|| format!("exit status in {:?}", lines[b]))?;
                return Ok((code, lines[a + 1..b].join("\n")));
            }
            if Instant::now() > deadline {
                bail!(
                    "{line:?} did not end within {within:?}; the screen:\n{}",
                    self.screen()?
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> Result<String> {
        tmux(&["capture-pane", "-p", "-J", "-t", &self.session])
    }

    /// Everything printed since the terminal opened (wrapped lines joined).
    fn scrollback(&self) -> Result<String> {
        tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &self.session])
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.session]);
    }
}
