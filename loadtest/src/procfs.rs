//! What the load generator reads of the server process and of itself.

use std::time::Duration;

/// CPU time (user + system) a process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let (user, system) = cpu_times(pid)?;
    Some(user + system)
}

/// User and system CPU time a process has used so far.
fn cpu_times(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // USER_HZ is 100 on Linux.
    let ticks = |i: usize| -> Option<Duration> {
        Some(Duration::from_millis(
            fields.get(i)?.parse::<u64>().ok()? * 10,
        ))
    };
    Some((ticks(11)?, ticks(12)?))
}

/// Resident memory of a process in bytes: all of it (`VmRSS`), and its
/// anonymous part (`RssAnon`: heap and stacks). The rest is file pages,
/// mostly the binary's code, faulted in on first use: shared, and the same
/// for one connection or a million, but in the growth over a storm all the
/// same (and by how much depends on the build's layout).
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
}

pub fn rss(pid: u32) -> Option<Rss> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:")?,
    })
}

/// Raises this process's soft open-file limit to the hard limit; returns it.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// CPU time spent by the server (if its PID is known) and by this process
/// over one measured window, read from `/proc` at both ends.
pub struct CpuWindow {
    server_pid: Option<u32>,
    server0: Option<Duration>,
    server_user0: Option<Duration>,
    own0: Option<Duration>,
    t0: std::time::Instant,
}

/// What a [`CpuWindow`] measured.
pub struct CpuSpent {
    /// Server CPU time over the window.
    pub server: Option<Duration>,
    /// The part of it in user space (the rest is the kernel's).
    pub server_user: Option<Duration>,
    /// This process's CPU time over the window.
    pub own: Option<Duration>,
    pub elapsed: Duration,
}

impl CpuWindow {
    pub fn start(server_pid: Option<u32>) -> CpuWindow {
        CpuWindow {
            server_pid,
            server0: server_pid.and_then(cpu_time),
            server_user0: server_pid.and_then(cpu_times).map(|t| t.0),
            own0: cpu_time(std::process::id()),
            t0: std::time::Instant::now(),
        }
    }

    pub fn finish(self) -> CpuSpent {
        let elapsed = self.t0.elapsed();
        let spent = |a: Option<Duration>, b: Option<Duration>| Some(b? - a?);
        CpuSpent {
            server: spent(self.server0, self.server_pid.and_then(cpu_time)),
            server_user: spent(
                self.server_user0,
                self.server_pid.and_then(cpu_times).map(|t| t.0),
            ),
            own: spent(self.own0, cpu_time(std::process::id())),
            elapsed,
        }
    }
}

impl CpuSpent {
    /// This process's share of one core over the window, in percent.
    pub fn own_pct(&self) -> Option<f64> {
        Some(100.0 * self.own?.as_secs_f64() / self.elapsed.as_secs_f64())
    }
}
