//! The process's open-file limit and the server's memory and CPU time.

use crate::error::{Error, Result};

/// Descriptors the bench needs besides its connections (stdio, the runtime, slack).
const SPARE_FDS: u64 = 64;

/// Raises the soft open-file limit to the hard limit and checks that `connections` fit.
pub(crate) fn ensure_open_files(connections: usize) -> Result<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| Error(format!("cannot raise the open-file limit: {e}")))?;
    let need = connections as u64 + SPARE_FDS;
    if need > limit {
        return Err(Error(format!(
            "{connections} connections need about {need} open files, but the hard limit is {limit}: \
             raise it (ulimit -Hn, or LimitNOFILE / limits.conf) or open fewer connections"
        )));
    }
    Ok(limit)
}

/// The resident set size of process `pid`, in KiB (`VmRSS` of /proc/PID/status).
pub(crate) fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .map_err(|e| Error(format!("--server-pid {pid}: cannot read {path}: {e}")))?;
    parse_vm_rss(&status).ok_or_else(|| {
        if status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'))
        {
            Error(format!("--server-pid {pid}: the process has exited"))
        } else {
            Error(format!("--server-pid {pid}: no VmRSS in {path}"))
        }
    })
}

/// Clock ticks per second of the times in /proc/PID/stat (`USER_HZ`, what
/// `sysconf(_SC_CLK_TCK)` returns: 100 on Linux, part of its ABI).
const USER_HZ: u64 = 100;

/// The CPU time process `pid` has used, user and system, all threads (those that have exited
/// included), in nanoseconds: `utime` + `stime` of /proc/PID/stat, so in steps of 10 ms.
/// `option` names where the pid came from (`--server-pid`, `--redis-pid`) in errors.
pub(crate) fn cpu_ns(option: &str, pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .map_err(|e| Error(format!("{option} {pid}: cannot read {path}: {e}")))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| Error(format!("{option} {pid}: unexpected {path}: {stat}")))?;
    Ok(ticks.saturating_mul(1_000_000_000 / USER_HZ))
}

/// `utime` + `stime` (fields 14 and 15) of a /proc/PID/stat line, in clock ticks.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // Field 2, the command name in parentheses, may hold spaces and parentheses itself: the
    // fields are counted from the last `)`, which is followed by field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(n),
        Some("mB") => Some(n * 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_line() {
        let status = "Name:\tswitchboard\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn stat_cpu_fields() {
        let stat = "4242 (sw (it) ch) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 31 0 0 20 0 3 0 \
                    100 200000000 5000 18446744073709551615 1 1 0 0 0 0 0 4096 17664 0 0 0 17 0 \
                    0 0 0 0 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(281));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        // Burn a little CPU so that at least one tick is counted.
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_ns("--server-pid", std::process::id()).expect("own stat") > 0);
        let e = cpu_ns("--redis-pid", u32::MAX).expect_err("no such process");
        assert!(e.0.starts_with("--redis-pid "), "{e}");
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib(std::process::id()).expect("own status") > 0);
        assert!(rss_kib(u32::MAX).is_err());
    }

    #[test]
    fn open_files_limit_is_checked() {
        assert!(ensure_open_files(10).is_ok());
        assert!(ensure_open_files(usize::MAX / 2).is_err());
    }
}
