//! `process_*` metrics, as Prometheus' client libraries name them: CPU
//! time, memory, descriptors, threads and the start time, read from
//! `/proc/self` at each scrape (nothing on the request path). On a system
//! without `/proc` the family is simply absent.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

/// What one reading of `/proc/self` says.
#[derive(Debug, Clone, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    threads: i64,
    start_time_seconds: f64,
    open_fds: i64,
    max_fds: i64,
}

fn sysconf(variable: nix::unistd::SysconfVar, fallback: i64) -> i64 {
    nix::unistd::sysconf(variable).ok().flatten().map_or(fallback, |v| v).max(1)
}

/// Parses `/proc/self/stat` (after the command name, which may hold spaces
/// and parentheses) with the boot time from `/proc/stat`.
fn parse(stat: &str, proc_stat: &str, ticks: i64, page: i64) -> Option<(f64, i64, i64, i64, f64)> {
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    // Field numbers of proc(5), minus the first two (pid, comm).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<i64>().ok());
    let ticks = ticks as f64;
    let cpu = (field(14)? + field(15)?) as f64 / ticks;
    let threads = field(20)?;
    let boot: f64 = proc_stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    let start = boot + field(22)? as f64 / ticks;
    Some((cpu, field(24)? * page, field(23)?, threads, start))
}

fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let proc_stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = sysconf(nix::unistd::SysconfVar::CLK_TCK, 100);
    let page = sysconf(nix::unistd::SysconfVar::PAGE_SIZE, 4096);
    let (cpu_seconds, resident_bytes, virtual_bytes, threads, start_time_seconds) =
        parse(&stat, &proc_stat, ticks, page)?;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| i64::try_from(soft).unwrap_or(i64::MAX));
    Some(Reading { cpu_seconds, resident_bytes, virtual_bytes, threads, start_time_seconds, open_fds, max_fds })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else { return Ok(()) };
        let cpu = ConstCounter::new(r.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 6] = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", r.resident_bytes as f64),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", r.virtual_bytes as f64),
            ("process_open_fds", "Number of open file descriptors", r.open_fds as f64),
            ("process_max_fds", "Maximum number of open file descriptors", r.max_fds as f64),
            ("process_threads", "Number of OS threads in the process", r.threads as f64),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                r.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_a_strange_command_name_parses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        let (cpu, rss, vsize, threads, start) = parse(stat, "cpu 1 2\nbtime 1700000000\n", 100, 4096).unwrap();
        assert_eq!(cpu, 3.0);
        assert_eq!(rss, 2560 * 4096);
        assert_eq!(vsize, 104_857_600);
        assert_eq!(threads, 7);
        assert_eq!(start, 1_700_000_123.45);
    }

    #[test]
    fn this_process_reads_itself() {
        let r = read().expect("/proc/self on Linux");
        assert!(r.resident_bytes > 0 && r.threads >= 1 && r.open_fds >= 3 && r.max_fds >= r.open_fds, "{r:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(r.start_time_seconds <= now + 1.0 && r.start_time_seconds > now - 86_400.0 * 365.0, "{r:?}");
    }
}
