//! The controller channel over TLS with mutual authentication: three voters with
//! certificates from a CA the test makes elect a leader and commit, a broker's
//! application calls and an observer work over TLS with a trusted, authorized
//! certificate, and every other peer is refused: plaintext, no client certificate, a
//! certificate from another CA, a trusted certificate whose principal may not use the
//! channel; and an observer whose permission is revoked stops receiving.
//!
//! Every wait has a deadline; everything listens on 127.0.0.1 (the certificates carry
//! it as an IP subjectAltName); data directories are temporary.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use spate_replication::{
    AppCallError, AppClient, AppReply, ControllerTls, ObserverConfig, Quorum, QuorumConfig, Role,
    Security,
};

mod common;
use common::{names, topic, Topics};

const DEADLINE: Duration = Duration::from_secs(20);

// ---- certificates ---------------------------------------------------------------

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and key issued to `name` (its CN), valid for 127.0.0.1 as server and
/// client.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca { cert, key }
    }

    fn issue(&self, name: &str) -> Identity {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST))];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("certificate");
        Identity {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("CA");
        Arc::new(roots)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn key_of(id: &Identity) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.clone()))
}

/// What a test node presents and trusts, and which principals it lets in. The
/// principal is looked up by certificate (the node maps the subject; not tested here).
#[derive(Debug)]
struct TestTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    principals: HashMap<Vec<u8>, String>,
    allowed: Allowed,
}

/// The principals that may use the channel, shared so that a test can revoke one.
type Allowed = Arc<Mutex<HashSet<String>>>;

impl ControllerTls for TestTls {
    fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    fn principal(&self, leaf: &CertificateDer<'_>) -> Result<String, String> {
        self.principals
            .get(leaf.as_ref())
            .cloned()
            .ok_or_else(|| "unknown certificate".to_string())
    }

    fn authorize(&self, principal: &str, _host: IpAddr) -> bool {
        self.allowed.lock().expect("lock").contains(principal)
    }
}

/// The test's PKI: a CA, the principal of each certificate it issued, and who may in.
struct Pki {
    ca: Ca,
    principals: Mutex<HashMap<Vec<u8>, String>>,
    allowed: Allowed,
}

impl Pki {
    fn new(allowed: &[&str]) -> Pki {
        Pki {
            ca: Ca::new("Spate test CA"),
            principals: Mutex::new(HashMap::new()),
            allowed: Arc::new(Mutex::new(allowed.iter().map(|s| s.to_string()).collect())),
        }
    }

    fn issue(&self, name: &str) -> Identity {
        let id = self.ca.issue(name);
        self.principals
            .lock()
            .expect("lock")
            .insert(id.chain[0].to_vec(), format!("User:{name}"));
        id
    }

    /// Security for a node presenting `id` and trusting this CA; with `None`, a client
    /// that trusts this CA but has no certificate to present.
    fn security(&self, id: Option<&Identity>) -> Security {
        let roots = self.ca.roots();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .expect("verifier");
        let versions = [&rustls::version::TLS12, &rustls::version::TLS13];
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .expect("versions")
            .with_root_certificates(roots);
        let (server, client) = match id {
            Some(id) => (
                ServerConfig::builder_with_provider(provider())
                    .with_protocol_versions(&versions)
                    .expect("versions")
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(id.chain.clone(), key_of(id))
                    .expect("server identity"),
                client
                    .with_client_auth_cert(id.chain.clone(), key_of(id))
                    .expect("client identity"),
            ),
            // A client without a certificate; its server side is never used.
            None => {
                let throwaway = self.ca.issue("unused");
                (
                    ServerConfig::builder_with_provider(provider())
                        .with_protocol_versions(&versions)
                        .expect("versions")
                        .with_no_client_auth()
                        .with_single_cert(throwaway.chain.clone(), key_of(&throwaway))
                        .expect("server identity"),
                    client.with_no_client_auth(),
                )
            }
        };
        Some(Arc::new(TestTls {
            server: Arc::new(server),
            client: Arc::new(client),
            principals: self.principals.lock().expect("lock").clone(),
            allowed: self.allowed.clone(),
        }))
    }
}

// ---- a TLS quorum ---------------------------------------------------------------

fn run<T>(body: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(body)
}

/// The index of the voter all of `quorums` agree leads.
fn leader(quorums: &[Quorum<Topics>]) -> usize {
    let start = Instant::now();
    loop {
        let seen: Vec<Option<u64>> = quorums.iter().map(|q| q.leader().0).collect();
        if let Some(Some(id)) = seen.first() {
            let i = (*id - 1) as usize;
            if seen.iter().all(|s| *s == Some(*id))
                && run(quorums[i].status()).expect("status").role == Role::Leader
            {
                return i;
            }
        }
        assert!(start.elapsed() < DEADLINE, "no agreed leader: {seen:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_applied(topics: &Topics, expected: &[String]) {
    let start = Instant::now();
    while topics.names() != expected {
        assert!(
            start.elapsed() < DEADLINE,
            "applied {:?}, expected {expected:?}",
            topics.names()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Calls the active controller as a broker with `security`; the call's result within
/// a short timeout (refusals must not take long).
fn call(voters: &BTreeMap<u64, String>, security: Security) -> Result<String, AppCallError> {
    let client = AppClient::start(voters.clone(), 1 << 20, Duration::from_secs(2), security)
        .expect("client");
    run(client.call(bytes::Bytes::from_static(b"hello")))
        .map(|answer| String::from_utf8_lossy(&answer).into_owned())
}

#[test]
fn a_tls_quorum_commits_and_refuses_unauthenticated_or_unauthorized_peers() {
    let pki = Pki::new(&[
        "User:controller-1",
        "User:controller-2",
        "User:controller-3",
        "User:broker",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let voters: BTreeMap<u64, String> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
        .collect();
    let identities: Vec<Identity> = (1..=3)
        .map(|id| pki.issue(&format!("controller-{id}")))
        .collect();
    let broker = pki.issue("broker");
    let intruder = pki.issue("intruder");
    let mut quorums = Vec::new();
    let mut states = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let mut config = QuorumConfig::new(id, voters.clone(), dir.path().join(format!("c{id}")));
        config.heartbeat_interval = Duration::from_millis(50);
        config.election_timeout_min = Duration::from_millis(300);
        config.election_timeout_max = Duration::from_millis(600);
        config.security = pki.security(Some(&identities[i]));
        let topics = Topics::default();
        let quorum =
            Quorum::start_with_listener(config, listener, topics.clone()).expect("start voter");
        let handler: spate_replication::AppHandler = Arc::new(move |body: bytes::Bytes| {
            Box::pin(async move {
                let mut answer = format!("{id}:").into_bytes();
                answer.extend_from_slice(&body);
                AppReply::Ok(answer.into())
            })
        });
        assert!(quorum.serve_app(handler));
        quorums.push(quorum);
        states.push(topics);
    }

    // Raft over TLS: a leader is elected and what it commits reaches every voter.
    let l = leader(&quorums);
    let wanted: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
    for name in &wanted {
        run(quorums[l].propose(&[topic(name)])).expect("propose");
    }
    for topics in &states {
        wait_applied(topics, &wanted);
    }

    // A broker with a trusted, authorized certificate: application calls reach the
    // leader, and an observer follows the log.
    assert_eq!(
        call(&voters, pki.security(Some(&broker))).expect("broker call"),
        format!("{}:hello", l + 1)
    );
    let mut observer = ObserverConfig::new(voters.clone());
    observer.security = pki.security(Some(&broker));
    let observed = spate_replication::observe(observer).expect("observer");
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen != wanted {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match observed.recv_timeout(left).expect("observed event") {
            spate_replication::Committed::Snapshot { records, .. } => seen = names(&records),
            spate_replication::Committed::Batch { records, .. } => seen.extend(names(&records)),
        }
    }

    // Everyone else is turned away.
    let other_ca = Pki::new(&["User:broker"]);
    let refused = [
        ("plaintext", None),
        ("no client certificate", pki.security(None)),
        (
            "a certificate from another CA",
            other_ca.security(Some(&other_ca.issue("broker"))),
        ),
        (
            "a trusted certificate without permission",
            pki.security(Some(&intruder)),
        ),
    ];
    for (what, security) in refused {
        match call(&voters, security) {
            Err(AppCallError::Unavailable(..)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    let mut plaintext_observer = ObserverConfig::new(voters.clone());
    plaintext_observer.connect_timeout = Duration::from_millis(500);
    let nothing = spate_replication::observe(plaintext_observer).expect("observer");
    assert!(
        nothing.recv_timeout(Duration::from_secs(2)).is_err(),
        "a plaintext observer received metadata"
    );

    // The quorum still works after the refusals.
    let l = leader(&quorums);
    run(quorums[l].propose(&[topic("after")])).expect("propose after refusals");
    let mut all = wanted.clone();
    all.push("after".into());
    for topics in &states {
        wait_applied(topics, &all);
    }
    let start = Instant::now();
    while seen != all {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match observed.recv_timeout(left).expect("observed event") {
            spate_replication::Committed::Snapshot { records, .. } => seen = names(&records),
            spate_replication::Committed::Batch { records, .. } => seen.extend(names(&records)),
        }
    }

    // The broker's permission is revoked: its open observer stream is cut, and it cannot
    // follow from any voter any more.
    pki.allowed.lock().expect("lock").remove("User:broker");
    let l = leader(&quorums);
    run(quorums[l].propose(&[topic("revoked")])).expect("propose after revocation");
    all.push("revoked".into());
    for topics in &states {
        wait_applied(topics, &all);
    }
    let until = Instant::now() + Duration::from_secs(3);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        if let Ok(event) = observed.recv_timeout(left) {
            panic!("a revoked observer received {event:?}");
        }
    }
    for q in quorums {
        q.shutdown();
    }
}
