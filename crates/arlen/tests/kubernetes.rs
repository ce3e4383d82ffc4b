//! The Kubernetes manifests in `deploy/kubernetes/`, tested as files a user
//! applies:
//!
//! - every file passes the Kubernetes schemas, strictly (unknown fields are
//!   errors), with `kubernetes-validate` (`scripts/provision --tests`);
//! - each StatefulSet comes up: the test plays the kubelet. Every pod gets a
//!   network namespace of its own (its IP on a bridge, the StatefulSet's
//!   DNS names in its hosts file), and its containers are started as
//!   Kubernetes would start them — the manifest's command or the image's
//!   entrypoint, its arguments and environment (`fieldRef`, `secretKeyRef`,
//!   `$(VAR)` expansion), as the user the pod's `securityContext` names —
//!   all at once under `podManagementPolicy: Parallel`, one after the other
//!   (each waiting for the previous one to be Ready) under the default
//!   `OrderedReady`. The readiness probe of the manifest, polled on the pod's
//!   IP, must pass on every pod;
//! - then as many pods as the PodDisruptionBudget allows are evicted (the
//!   kubelet's termination: `preStop` hooks, then SIGTERM), and every other
//!   pod must stay Ready throughout, until the evicted pod is back.
//!
//! Needs root, `ip`, python3 with PyYAML (`scripts/provision --tests`).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::binary;
use support::netlab::{run, Lab};

/// How long every pod may take to be Ready after it was started.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// `PATH` in the images the manifests name.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes").join(file)
}

/// The documents of a YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let script = "import sys, json, yaml\nprint(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))";
    let output = Command::new("python3").args(["-c", script]).arg(path).output().expect("python3");
    assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice::<Vec<Value>>(&output.stdout).unwrap()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

#[test]
fn every_manifest_passes_the_kubernetes_schemas_strictly() {
    let dir = deploy("");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "manifests in {}: {files:?}", dir.display());
    let output = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(&files)
        .output()
        .expect("python3 -m kubernetes_validate (scripts/provision --tests installs it)");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{said}");
    assert!(output.status.success(), "strict validation failed:\n{said}");
    // Each resource was checked (the validator says `passed` per resource).
    let resources: usize = files.iter().map(|f| documents(f).len()).sum();
    assert_eq!(said.matches(" passed ").count(), resources, "{said}");
}

/// A pod of the StatefulSet, played by the test: its containers as processes
/// in its namespace. Killed on drop.
struct Pod {
    name: String,
    host: usize,
    containers: Vec<(String, Child)>,
}

impl Pod {
    fn pid_of(&self, container: &str) -> Option<u32> {
        self.containers.iter().find(|(name, _)| name == container).map(|(_, c)| c.id())
    }

    fn exited(&mut self, container: &str) -> bool {
        self.containers
            .iter_mut()
            .find(|(name, _)| name == container)
            .is_none_or(|(_, child)| child.try_wait().ok().flatten().is_some())
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        for (_, child) in &mut self.containers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `$(NAME)` replaced by the value of a variable defined before it, `$$` an
/// escaped `$`, anything else kept (Kubernetes' dependent variables).
fn expand(value: &str, defined: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after) = after.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')')) {
            match defined.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&format!("$({name})")),
            }
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The kubelet of this test: what it needs to start a pod of `set`.
struct Kubelet<'a> {
    lab: &'a Lab,
    set: &'a Value,
    secrets: BTreeMap<(String, String), String>,
    logs: &'a Path,
}

impl Kubelet<'_> {
    fn spec(&self) -> &Value {
        &self.set["spec"]["template"]["spec"]
    }

    fn pod_name(&self, ordinal: usize) -> String {
        format!("{}-{ordinal}", text(&self.set["metadata"]["name"]))
    }

    fn environment(&self, container: &Value, pod: &str, ip: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        // A container image's search path: the test's own (a Python under
        // /root, say) is not what a pod has, nor readable by its user.
        env.insert("PATH".to_owned(), IMAGE_PATH.to_owned());
        env.insert("HOSTNAME".to_owned(), pod.to_owned());
        for var in container["env"].as_array().into_iter().flatten() {
            let name = text(&var["name"]).to_owned();
            let from = &var["valueFrom"];
            let value = if let Some(value) = var["value"].as_str() {
                expand(value, &env)
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => pod.to_owned(),
                    "status.podIP" => ip.to_owned(),
                    other => panic!("{name}: fieldRef {other} is not played by this test"),
                }
            } else if from["secretKeyRef"].is_object() {
                let key =
                    (text(&from["secretKeyRef"]["name"]).to_owned(), text(&from["secretKeyRef"]["key"]).to_owned());
                self.secrets.get(&key).unwrap_or_else(|| panic!("{name}: no secret {key:?}")).clone()
            } else {
                panic!("{name}: a value or a valueFrom the test plays")
            };
            env.insert(name, value);
        }
        env
    }

    /// The command a container runs: its `command`, or the image's
    /// entrypoint (the Arlen image's is `arlen`), then its `args`.
    fn command_line(container: &Value, env: &BTreeMap<String, String>) -> Vec<String> {
        let image = text(&container["image"]);
        let mut line: Vec<String> = match container["command"].as_array() {
            Some(command) => command.iter().map(|c| expand(text(c), env)).collect(),
            None if image.contains("/arlen:") => vec![binary().display().to_string()],
            None => panic!("image {image}: no command and no entrypoint this test knows"),
        };
        line.extend(container["args"].as_array().into_iter().flatten().map(|a| expand(text(a), env)));
        line
    }

    fn start(&self, ordinal: usize, work: &Path) -> Pod {
        let name = self.pod_name(ordinal);
        let ip = self.lab.ip(ordinal);
        let security = &self.spec()["securityContext"];
        let mut containers = Vec::new();
        for container in self.spec()["containers"].as_array().unwrap() {
            let env = self.environment(container, &name, &ip);
            let line = Self::command_line(container, &env);
            let log = self.logs.join(format!("{name}-{}.log", text(&container["name"])));
            let stderr = std::fs::File::create(&log).unwrap();
            let mut command = Command::new("ip");
            command.args(["netns", "exec", &self.lab.ns(ordinal)]);
            if let Some(uid) = security["runAsUser"].as_u64() {
                let gid = security["runAsGroup"].as_u64().unwrap_or(uid);
                command.args(["setpriv", &format!("--reuid={uid}"), &format!("--regid={gid}"), "--clear-groups", "--"]);
            }
            command
                .args(&line)
                .current_dir(work)
                .env_clear()
                .envs(&env)
                .stdin(Stdio::null())
                .stdout(stderr.try_clone().unwrap())
                .stderr(stderr);
            let child = command.spawn().unwrap_or_else(|e| panic!("start {name}/{}: {e}", text(&container["name"])));
            containers.push((text(&container["name"]).to_owned(), child));
        }
        Pod { name, host: ordinal, containers }
    }

    /// The readiness probe's address and path: the first container that
    /// has one (named ports resolved from its `ports`).
    fn readiness(&self, pod: &Pod) -> (SocketAddr, String) {
        let containers = self.spec()["containers"].as_array().unwrap();
        let container = containers.iter().find(|c| c["readinessProbe"].is_object()).expect("a readiness probe");
        let probe = &container["readinessProbe"]["httpGet"];
        let port = match &probe["port"] {
            Value::Number(n) => n.as_u64().unwrap(),
            Value::String(named) => container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == named.as_str() && p["protocol"].as_str().is_none_or(|p| p == "TCP"))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("named port {named}")),
            other => panic!("probe port {other}"),
        };
        (format!("{}:{port}", self.lab.ip(pod.host)).parse().unwrap(), text(&probe["path"]).to_owned())
    }

    fn ready(&self, pod: &Pod) -> bool {
        let (address, path) = self.readiness(pod);
        get(address, &path).is_some_and(|(status, _)| (200..400).contains(&status))
    }

    fn log_tail(&self, pod: &Pod) -> String {
        let mut out = String::new();
        for (container, _) in &pod.containers {
            let text =
                std::fs::read_to_string(self.logs.join(format!("{}-{container}.log", pod.name))).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {}/{container}\n{}\n",
                pod.name,
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        out
    }

    fn wait_ready(&self, pod: &Pod) -> Result<Duration, String> {
        let started = Instant::now();
        while started.elapsed() < READY_WITHIN {
            if self.ready(pod) {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("{} never Ready within {READY_WITHIN:?}\n{}", pod.name, self.log_tail(pod)))
    }

    /// Starts every pod as the StatefulSet's pod management policy says and
    /// waits for each to be Ready.
    fn bring_up(&self, work: &Path) -> Result<Vec<Pod>, String> {
        let replicas = self.set["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let policy = self.set["spec"]["podManagementPolicy"].as_str().unwrap_or("OrderedReady");
        let mut pods = Vec::new();
        if policy == "Parallel" {
            pods.extend((0..replicas).map(|i| self.start(i, work)));
            for pod in &pods {
                let took = self.wait_ready(pod)?;
                println!("{} Ready after {took:?} (policy {policy})", pod.name);
            }
        } else {
            for i in 0..replicas {
                pods.push(self.start(i, work));
                let took = self.wait_ready(&pods[i]).map_err(|e| format!("under {policy}: {e}"))?;
                println!("{} Ready after {took:?} (policy {policy})", pods[i].name);
            }
        }
        Ok(pods)
    }

    /// The kubelet's termination of a pod: containers with a `preStop`
    /// sleep get SIGTERM when it ends (a thread of the test plays the
    /// hook), the others at once.
    fn terminate(&self, pod: &Pod) {
        for container in self.spec()["containers"].as_array().unwrap() {
            let Some(pid) = pod.pid_of(text(&container["name"])) else { continue };
            let hook = &container["lifecycle"]["preStop"];
            let delay = match hook["sleep"]["seconds"].as_u64() {
                Some(seconds) => Duration::from_secs(seconds),
                None if hook.is_null() => Duration::ZERO,
                None => panic!("preStop {hook}: only `sleep` is played by this test"),
            };
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = run("kill", &["-TERM", &pid.to_string()]);
            });
        }
    }
}

/// GET with timeouts: the status and the body, or `None`.
fn get(address: SocketAddr, target: &str) -> Option<(u16, String)> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

/// How many pods the PodDisruptionBudget lets go at once.
fn disruptions_allowed(docs: &[Value], replicas: usize) -> usize {
    let budgets = of_kind(docs, "PodDisruptionBudget");
    let budget = budgets.first().expect("a PodDisruptionBudget");
    let spec = &budget["spec"];
    match (spec["maxUnavailable"].as_u64(), spec["minAvailable"].as_u64()) {
        (Some(max), _) => max as usize,
        (None, Some(min)) => replicas.saturating_sub(min as usize),
        _ => panic!("PodDisruptionBudget {spec}: an integer maxUnavailable or minAvailable"),
    }
}

/// Brings `file`'s StatefulSet up, evicts what its budget allows, and
/// checks that the others stay Ready and the evicted pods come back.
/// `extra` hosts (an etcd) get the namespaces after the pods'.
fn exercise(file: &str, extra: &[&str], during_drain: impl Fn(&Kubelet<'_>, &Pod, SocketAddr)) {
    let docs = documents(&deploy(file));
    let set = *of_kind(&docs, "StatefulSet").first().expect("a StatefulSet");
    let replicas = set["spec"]["replicas"].as_u64().unwrap() as usize;
    let service = text(&set["spec"]["serviceName"]).to_owned();
    let salt = file.bytes().map(u64::from).sum::<u64>();
    let lab = Lab::new(replicas + extra.len(), salt);
    let logs = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut names: Vec<(String, String)> = (0..replicas)
        .map(|i| {
            (
                lab.ip(i),
                format!("{}-{i}.{service} {}-{i}", text(&set["metadata"]["name"]), text(&set["metadata"]["name"])),
            )
        })
        .collect();
    names.extend(extra.iter().enumerate().map(|(k, name)| (lab.ip(replicas + k), (*name).to_owned())));
    for host in 0..replicas + extra.len() {
        lab.hosts_file(host, &names);
    }
    // The gossip key Secret, made as the manifest's comment says.
    let mut secrets = BTreeMap::new();
    let keygen = Command::new(binary()).args(["gossip", "keygen"]).output().unwrap();
    let key = String::from_utf8(keygen.stdout).unwrap().trim().to_owned();
    for container in set["spec"]["template"]["spec"]["containers"].as_array().unwrap() {
        for var in container["env"].as_array().into_iter().flatten() {
            let reference = &var["valueFrom"]["secretKeyRef"];
            if reference.is_object() {
                secrets.insert((text(&reference["name"]).to_owned(), text(&reference["key"]).to_owned()), key.clone());
            }
        }
    }
    let _extra_processes: Vec<ExtraProcess> =
        extra.iter().enumerate().map(|(k, name)| ExtraProcess::start(&lab, replicas + k, name, logs.path())).collect();
    let kubelet = Kubelet { lab: &lab, set, secrets, logs: logs.path() };
    let mut pods = kubelet.bring_up(work.path()).unwrap_or_else(|e| panic!("{file}: {e}"));

    let allowed = disruptions_allowed(&docs, replicas);
    assert!(allowed >= 1 && allowed < replicas, "{file}: the budget allows {allowed} of {replicas}");
    for pod in &pods[replicas - allowed..] {
        kubelet.terminate(pod);
    }
    // Until every evicted pod's Arlen has exited, and as long again as a
    // node's loss grace after that (every node has counted the loss), the
    // others stay Ready.
    let arlen = |pod: &Pod| {
        kubelet.spec()["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["command"].is_null())
            .map(|c| text(&c["name"]).to_owned())
            .unwrap_or_else(|| panic!("no Arlen container in {}", pod.name))
    };
    let grace = Duration::from_millis(
        set["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c["env"].as_array().into_iter().flatten())
            .find(|v| v["name"] == "ARLEN_CLUSTER_QUORUM_LOSS_GRACE_MS")
            .and_then(|v| text(&v["value"]).parse().ok())
            .unwrap_or(2000),
    );
    let termination =
        Duration::from_secs(set["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    let started = Instant::now();
    let mut exited_at: Option<Instant> = None;
    let mut checks = 0;
    while exited_at.is_none_or(|at| at.elapsed() < grace + Duration::from_secs(2)) {
        assert!(started.elapsed() < termination, "{file}: evicted pods still running after {termination:?}");
        for pod in &pods[..replicas - allowed] {
            assert!(
                kubelet.ready(pod),
                "{file}: {} left rotation after the eviction\n{}",
                pod.name,
                kubelet.log_tail(pod)
            );
            checks += 1;
        }
        for pod in &pods[replicas - allowed..] {
            let (address, _) = kubelet.readiness(pod);
            during_drain(&kubelet, pod, address);
        }
        if exited_at.is_none() {
            let name = arlen(&pods[replicas - 1]);
            if pods[replicas - allowed..].iter_mut().all(|p| p.exited(&name)) {
                exited_at = Some(Instant::now());
                println!("{file}: evicted Arlen exited after {:?}", started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("{file}: {checks} readiness checks of the remaining pods, all Ready");
    // The StatefulSet puts the evicted pods back, and they are Ready again.
    for (victim, pod) in pods.iter_mut().enumerate().skip(replicas - allowed) {
        *pod = kubelet.start(victim, work.path());
    }
    for pod in &pods {
        kubelet.wait_ready(pod).unwrap_or_else(|e| panic!("{file}: after the eviction: {e}"));
    }
}

/// A process a manifest depends on, in a namespace of its own (an etcd
/// behind the name `etcd`). Killed on drop.
struct ExtraProcess(Child);

impl ExtraProcess {
    fn start(lab: &Lab, host: usize, name: &str, logs: &Path) -> Self {
        assert_eq!(name, "etcd", "only an etcd is played by this test");
        let ip = lab.ip(host);
        let data = logs.join("etcd-data");
        let log = std::fs::File::create(logs.join("etcd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &lab.ns(host), "etcd", "--name", "etcd", "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &format!("http://{ip}:2379"),
                "--advertise-client-urls",
                &format!("http://{ip}:2379"),
                "--listen-peer-urls",
                &format!("http://{ip}:2380"),
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:2380"),
                "--initial-cluster",
                &format!("etcd=http://{ip}:2380"),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (scripts/provision --tests installs etcd-server)");
        Self(child)
    }
}

impl Drop for ExtraProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_gossip_statefulset_comes_up_and_survives_an_eviction_within_its_budget() {
    exercise("shop.yaml", &[], |_, _, _| {});
}

#[test]
fn the_etcd_statefulset_comes_up_and_survives_an_eviction_within_its_budget() {
    exercise("etcd.yaml", &["etcd"], |_, _, _| {});
}

#[test]
fn the_sidecar_pods_come_up_and_the_application_outlives_the_drain() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let answered = AtomicUsize::new(0);
    exercise("sidecar.yaml", &[], |_, pod, address| {
        // While the evicted pod drains (not ready, still serving), what it
        // forwards reaches a live application: never a 502.
        let Some((ready, _)) = get(address, "/readyz") else { return };
        if ready == 503 {
            if let Some((status, head)) = get(address, "/") {
                assert_ne!(status, 502, "{}: the application was gone during the drain:\n{head}", pod.name);
                if status == 200 {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    let answered = answered.load(Ordering::Relaxed);
    println!("requests forwarded by the draining sidecar and answered: {answered}");
    assert!(answered > 0, "no request reached the application while the sidecar drained");
}

#[test]
fn the_default_pod_management_policy_never_brings_a_quorum_cluster_up() {
    // What bit us: without `podManagementPolicy: Parallel` the first pod
    // waits for a quorum only the next pods can give.
    let docs = documents(&deploy("shop.yaml"));
    let mut set = (*of_kind(&docs, "StatefulSet").first().unwrap()).clone();
    set["spec"].as_object_mut().unwrap().remove("podManagementPolicy");
    let lab = Lab::new(3, 991);
    let logs = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let names: Vec<(String, String)> = (0..3).map(|i| (lab.ip(i), format!("shop-{i}.shop-peers"))).collect();
    (0..3).for_each(|h| lab.hosts_file(h, &names));
    let key = String::from_utf8(Command::new(binary()).args(["gossip", "keygen"]).output().unwrap().stdout).unwrap();
    let secrets = BTreeMap::from([(("shop-gossip".to_owned(), "keys".to_owned()), key.trim().to_owned())]);
    let kubelet = Kubelet { lab: &lab, set: &set, secrets, logs: logs.path() };
    let started = Instant::now();
    let first = kubelet.start(0, work.path());
    while started.elapsed() < Duration::from_secs(8) {
        assert!(!kubelet.ready(&first), "shop-0 alone became Ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("under OrderedReady shop-0 stayed not Ready for {:?}: shop-1 would never be created", started.elapsed());
}

#[test]
fn dependent_variables_expand_as_kubernetes_expands_them() {
    let defined = BTreeMap::from([("POD_IP".to_owned(), "10.0.0.7".to_owned())]);
    assert_eq!(expand("$(POD_IP):3000", &defined), "10.0.0.7:3000");
    assert_eq!(expand("$$(POD_IP)", &defined), "$(POD_IP)");
    assert_eq!(expand("$(MISSING) $", &defined), "$(MISSING) $");
}
