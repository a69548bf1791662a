//! A three-node NATS cluster with JetStream and its MQTT listener on
//! loopback, for the failover tests: a clustered broker of the kind a fleet
//! moves to when one Mosquitto is not enough.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mqtt::{Subscriber, free_port};

pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

pub struct Node {
    pub name: String,
    pub mqtt_port: u16,
    route_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.mqtt_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(&self.log).expect("node log");
        let child = Command::new(NATS_SERVER)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL: the node dies with its clients' connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

impl Cluster {
    /// Starts the nodes on free ports and waits until every node's MQTT
    /// listener takes a retained message the others serve: JetStream has
    /// elected its leaders and the MQTT streams exist.
    ///
    /// Route and MQTT ports must be known before the nodes start (each node
    /// names the others' routes), so they come from free_port(), and another
    /// test can take one before the node binds it. A node that exits while
    /// the cluster starts therefore makes the whole cluster start again on
    /// fresh ports.
    pub async fn start(size: usize) -> Cluster {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut cluster = Cluster::spawn(size);
            match cluster.wait_ready().await {
                Ok(()) => return cluster,
                Err(why) => {
                    eprintln!("the NATS cluster starts again: {why}");
                    failures.push(why);
                }
            }
        }
        panic!("the NATS cluster did not start:\n{}", failures.join("\n"));
    }

    fn spawn(size: usize) -> Cluster {
        static SPAWNED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let cluster_name = format!(
            "outlet-test-{}-{}",
            std::process::id(),
            SPAWNED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let routes: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_urls: Vec<String> = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let mqtt_port = free_port();
            let conf = dir.join(format!("{name}.conf"));
            // The client port is nobody's business here: -1 lets the node
            // pick one itself.
            let text = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:-1\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{\n  name: {cluster}\n  listen: 127.0.0.1:{route}\n  routes: [{routes}]\n}}\n\
                 mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n",
                // Its own name: a node of another test's cluster that
                // reaches one of these route ports is refused, not merged.
                cluster = cluster_name,
                store = dir.join(&name).display(),
                routes = route_urls.join(", "),
            );
            std::fs::write(&conf, text).expect("write node config");
            let log = dir.join(format!("{name}.log"));
            let mut node = Node {
                name,
                mqtt_port,
                route_port: *route,
                conf,
                log,
                child: None,
            };
            node.spawn();
            nodes.push(node);
        }
        Cluster { nodes, dir }
    }

    /// Err when a node exits before the cluster is ready (a port it could
    /// not bind, most likely; its log says).
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0..self.nodes.len() {
            // Its own MQTT listener, not whatever else holds the port.
            let listening = format!(
                "Listening for MQTT clients on mqtt://127.0.0.1:{}",
                self.nodes[i].mqtt_port
            );
            // The route listener comes last, after "Server is ready"; a
            // node that cannot bind its port exits instead.
            let routes = format!(
                "Listening for route connections on 127.0.0.1:{}",
                self.nodes[i].route_port
            );
            let ready = |log: &str| log.contains(&listening) && log.contains(&routes);
            while !ready(&self.nodes[i].log()) {
                self.all_running()?;
                assert!(
                    Instant::now() < deadline,
                    "{} does not listen for MQTT:\n{}",
                    self.nodes[i].name,
                    self.nodes[i].log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // A retained message through the first node, read on every node.
        // Published again until every node serves it: right after start a
        // publish can come before JetStream's leaders, and a node that
        // learns of a retained message after a subscription never hands it
        // to that subscription (ARCHITECTURE.md, "What differs on NATS").
        let topic = format!("cluster-ready/{}", std::process::id());
        let first = Subscriber::connect(&self.nodes[0].url(), &[]).await;
        let mut round = 0;
        'probe: loop {
            round += 1;
            first.publish(&topic, format!("ready {round}"), true).await;
            for i in 0..self.nodes.len() {
                let mut sub = Subscriber::connect(&self.nodes[i].url(), &[&topic]).await;
                let probe = |m: &super::mqtt::Msg| m.topic == topic && !m.payload.is_empty();
                if sub.seen.iter().any(probe) {
                    continue;
                }
                if sub
                    .try_wait_for(Duration::from_secs(5), probe)
                    .await
                    .is_none()
                {
                    self.all_running()?;
                    assert!(
                        Instant::now() < deadline,
                        "{} never served the retained probe:\n{}",
                        self.nodes[i].name,
                        self.logs()
                    );
                    continue 'probe;
                }
            }
            break;
        }
        if round > 1 {
            eprintln!("the cluster served the retained probe on round {round}");
        }
        first.publish(&topic, "", true).await;
        self.all_running()
    }

    fn all_running(&mut self) -> Result<(), String> {
        if self.nodes.iter_mut().all(Node::running) {
            Ok(())
        } else {
            Err(format!("a node exited:\n{}", self.logs()))
        }
    }

    /// The node whose URL the last "MQTT connected to" line in `text` (the
    /// agent's log) names.
    pub fn node_named_last_in(&self, text: &str) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                text.rfind(&format!("MQTT connected to {} as ", n.url()))
                    .map(|at| (at, i))
            })
            .max()
            .map(|(_, i)| i)
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("--- {}\n{}", n.name, n.log()))
            .collect()
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
