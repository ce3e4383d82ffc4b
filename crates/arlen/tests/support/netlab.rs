//! A laboratory of network namespaces for the real-fault tests: a hub
//! namespace with a bridge, one namespace per host joined to it by a veth
//! pair, and a monitor veth in the test's own namespace, from which the test
//! reaches every host. Everything is the test's own and removed on drop
//! (left-overs of a killed run by the next one). Needs root, `ip` and `nft`.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

pub fn must(program: &str, args: &[&str]) {
    if let Err(error) = run(program, args) {
        panic!("{error}");
    }
}

/// The test's own namespaces: a hub with the bridge, one per host, and a
/// monitor veth in the test's namespace. Removed on drop.
pub struct Lab {
    tag: String,
    subnet: [u8; 3],
    hosts: usize,
}

impl Lab {
    /// Namespaces left by a test process that no longer exists.
    fn remove_leftovers() {
        let Ok(list) = run("ip", &["netns", "list"]) else { return };
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(pid) = name.strip_prefix("arlt").and_then(|rest| rest.split('-').next()) else { continue };
            if pid.parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = run("ip", &["netns", "del", name]);
                let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(name));
                let _ = run("ip", &["link", "del", &format!("arlt{pid}m")]);
            }
        }
    }

    pub fn new(hosts: usize, salt: u64) -> Self {
        Self::remove_leftovers();
        let pid = std::process::id();
        let tag = format!("arlt{pid}");
        let subnet = [10, 200 + (salt % 50) as u8, (pid % 250) as u8 + 1];
        let lab = Self { tag, subnet, hosts };
        let hub = lab.hub();
        must("ip", &["netns", "add", &hub]);
        must("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = lab.ns(i);
            let port = format!("h{i}");
            must("ip", &["netns", "add", &ns]);
            must("ip", &["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            must("ip", &["-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            must("ip", &["-n", &ns, "addr", "add", &format!("{}/24", lab.ip(i)), "dev", "eth0"]);
            must("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        let monitor = lab.monitor_if();
        must("ip", &["link", "add", &monitor, "type", "veth", "peer", "name", "mon", "netns", &hub]);
        must("ip", &["-n", &hub, "link", "set", "mon", "master", "br0", "up"]);
        must("ip", &["addr", "add", &format!("{}/24", lab.monitor_ip()), "dev", &monitor]);
        must("ip", &["link", "set", &monitor, "up"]);
        lab
    }

    pub fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{i}", self.tag)
    }

    pub fn monitor_if(&self) -> String {
        format!("{}m", self.tag)
    }

    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}.{}.{}", self.subnet[0], self.subnet[1], self.subnet[2], i + 1)
    }

    pub fn monitor_ip(&self) -> String {
        format!("{}.{}.{}.254", self.subnet[0], self.subnet[1], self.subnet[2])
    }

    /// Replaces host `i`'s packet filter: drop everything from the hosts in
    /// `deaf_to` (inbound) and to the hosts in `mute_to` (outbound), and
    /// `loss` percent of what comes from `lossy` hosts. The monitor is never
    /// cut: the checker must see every node.
    pub fn filter(&self, i: usize, deaf_to: &[usize], mute_to: &[usize], lossy: &[(usize, u8)]) {
        let mut rules = String::from("flush ruleset\ntable inet arlen {\n");
        let set = |hosts: &[usize]| hosts.iter().map(|h| self.ip(*h)).collect::<Vec<_>>().join(", ");
        rules.push_str("  chain input { type filter hook input priority 0; policy accept;\n");
        if !deaf_to.is_empty() {
            rules.push_str(&format!("    ip saddr {{ {} }} drop\n", set(deaf_to)));
        }
        for (host, percent) in lossy {
            rules.push_str(&format!("    ip saddr {} numgen random mod 100 < {percent} drop\n", self.ip(*host)));
        }
        rules.push_str("  }\n  chain output { type filter hook output priority 0; policy accept;\n");
        if !mute_to.is_empty() {
            rules.push_str(&format!("    ip daddr {{ {} }} drop\n", set(mute_to)));
        }
        rules.push_str("  }\n}\n");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(i), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "nft: {}\n{rules}", String::from_utf8_lossy(&output.stderr));
    }

    /// Names host `i` resolves without DNS: `ip netns exec` bind-mounts
    /// `/etc/netns/<namespace>/hosts` over `/etc/hosts` for what it runs.
    pub fn hosts_file(&self, i: usize, names: &[(String, String)]) {
        let dir = Path::new("/etc/netns").join(self.ns(i));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::from("127.0.0.1 localhost\n");
        for (ip, name) in names {
            text.push_str(&format!("{ip} {name}\n"));
        }
        std::fs::write(dir.join("hosts"), text).unwrap();
    }

    pub fn heal(&self, i: usize) {
        must("ip", &["netns", "exec", &self.ns(i), "nft", "flush", "ruleset"]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.hosts {
            let _ = run("ip", &["netns", "del", &self.ns(i)]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(self.ns(i)));
        }
        let _ = run("ip", &["netns", "del", &self.hub()]);
        let _ = run("ip", &["link", "del", &self.monitor_if()]);
    }
}
