//! The process's open-file limit and the server's memory.

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
