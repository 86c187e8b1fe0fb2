//! What `/proc` says about the function process.

use std::collections::HashMap;
use std::time::Duration;

/// CPU time of all the process's threads (`/proc/<pid>/task/*/schedstat`, nanoseconds on CPU),
/// so tokio's worker and blocking-pool threads are counted, not just the main one. A thread
/// that has exited is gone from `/proc`: its last reading is kept, so its time still counts.
#[derive(Debug, Default)]
pub struct CpuMeter {
    last: HashMap<String, u64>,
}

impl CpuMeter {
    pub fn read(&mut self, pid: u32) -> Option<Duration> {
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
                continue; // it exited between the listing and the read
            };
            if let Some(nanos) = stat.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()) {
                self.last.insert(task.file_name().to_string_lossy().into_owned(), nanos);
            }
        }
        Some(Duration::from_nanos(self.last.values().sum()))
    }
}

/// Peak resident set size (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
