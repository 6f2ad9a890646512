//! The listeners a shard accepts on, as the dynamic `listeners` and
//! `listener.security.protocol.map` change them (`broker_config/listeners.rs` checks a
//! change). Shard 0 binds a new listener's sockets, one per shard (SO_REUSEPORT, as at
//! start), and sends each shard its own; a removed listener stops accepting on every
//! shard and its open connections are shut down, as Kafka stops a removed listener's
//! acceptor and processors. Each shard's set is its own: no lock on the data path.
//! A change of a listener's TLS files switches its TLS context (`switch_tls_files`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context;

use crate::config::BrokerConfig;
use crate::mesh::ShardMsg;
use crate::security::Listener;
use crate::shard::ShardContext;

/// What shard 0 sends each shard when the listeners change: this shard's sockets of
/// the new listeners, and the names of the removed ones.
pub struct ListenerChange {
    pub added: Vec<(Arc<Listener>, std::net::TcpListener)>,
    pub removed: Vec<String>,
}

/// The listeners one shard accepts on.
#[derive(Default)]
pub struct ShardListeners {
    accepting: RefCell<Vec<Accepting>>,
}

struct Accepting {
    listener: Arc<Listener>,
    /// The accept loop: dropped, it stops and its socket closes.
    _accept: compio::runtime::JoinHandle<()>,
    connections: Rc<Connections>,
}

/// The open connections of one listener on one shard, by their socket.
#[derive(Default)]
pub struct Connections {
    open: RefCell<HashMap<u64, RawFd>>,
    next: Cell<u64>,
}

/// A connection's entry in its listener's [`Connections`], removed when dropped. It
/// must be dropped with the connection's socket, with no await in between, so that a
/// shut-down never reaches a socket number the kernel gave to another connection.
pub struct Registered {
    connections: Rc<Connections>,
    id: u64,
}

impl Connections {
    pub fn register(self: &Rc<Self>, fd: RawFd) -> Registered {
        let id = self.next.get();
        self.next.set(id + 1);
        self.open.borrow_mut().insert(id, fd);
        Registered {
            connections: self.clone(),
            id,
        }
    }

    /// Shut every open connection down: their reads and writes end, and they close.
    fn shut_down(&self) {
        for &fd in self.open.borrow().values() {
            // SAFETY: the socket is open (its entry goes when it closes, see
            // `Registered`); shutdown(2) only ends its traffic.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open.borrow_mut().remove(&self.id);
    }
}

impl ShardListeners {
    /// The listeners this shard accepts on.
    pub fn current(&self) -> Vec<Arc<Listener>> {
        self.accepting
            .borrow()
            .iter()
            .map(|a| a.listener.clone())
            .collect()
    }
}

/// Accept on `socket` (this shard's) for `listener`.
pub fn start(
    ctx: &Rc<ShardContext>,
    listener: Arc<Listener>,
    socket: std::net::TcpListener,
) -> anyhow::Result<()> {
    let socket = compio::net::TcpListener::from_std(socket)
        .with_context(|| format!("shard {}: listener {}", ctx.id, listener.name))?;
    let connections = Rc::new(Connections::default());
    let accept = compio::runtime::spawn(crate::shard::accept_loop(
        ctx.clone(),
        listener.clone(),
        socket,
        connections.clone(),
    ));
    ctx.listeners.accepting.borrow_mut().push(Accepting {
        listener,
        _accept: accept,
        connections,
    });
    Ok(())
}

/// This shard's part of a change.
pub fn apply(ctx: &Rc<ShardContext>, change: ListenerChange) {
    for name in &change.removed {
        let removed = {
            let mut accepting = ctx.listeners.accepting.borrow_mut();
            accepting
                .iter()
                .position(|a| &a.listener.name == name)
                .map(|i| accepting.remove(i))
        };
        if let Some(a) = removed {
            a.connections.shut_down();
            tracing::info!(shard = ctx.id, listener = %name, "listener removed");
        }
    }
    for (listener, socket) in change.added {
        let name = listener.name.clone();
        match start(ctx, listener, socket) {
            Ok(()) => tracing::info!(shard = ctx.id, listener = %name, "listener added"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "adding a listener failed"),
        }
    }
}

/// On shard 0, once the dynamic broker configs changed: the listeners of `live` (the
/// settings in effect) that are new are bound and every shard told to accept on them
/// (in order: one task sends a change to every other shard); those that are gone are
/// stopped. Listeners are matched by name, as Kafka matches them.
pub fn reconcile(ctx: &Rc<ShardContext>, live: &BrokerConfig) {
    let specs = match live.listener_specs() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "dynamic listeners not applied");
            return;
        }
    };
    let current = ctx.listeners.current();
    // The shard's first image comes before its listeners start: those main bound are
    // the ones in effect already.
    if current.is_empty() {
        return;
    }
    let removed: Vec<String> = current
        .iter()
        .filter(|l| !specs.iter().any(|s| s.name == l.name))
        .map(|l| l.name.clone())
        .collect();
    let mut added: Vec<Vec<(Arc<Listener>, std::net::TcpListener)>> =
        (0..ctx.shard_count).map(|_| Vec::new()).collect();
    for spec in specs
        .iter()
        .filter(|s| !current.iter().any(|l| l.name == s.name))
    {
        let bound = bind(spec.bind, ctx.shard_count).and_then(|sockets| {
            let addr = sockets[0].local_addr().context("listener address")?;
            // Not registered: KRaft brokers register their listeners once.
            let listener = crate::security::build_listeners(
                live,
                std::slice::from_ref(spec),
                &[addr],
                &[],
                &current,
            )?
            .pop()
            .context("no listener built")?;
            Ok((listener, sockets))
        });
        match bound {
            Ok((listener, sockets)) => {
                for (s, socket) in sockets.into_iter().enumerate() {
                    added[s].push((listener.clone(), socket));
                }
            }
            Err(e) => {
                tracing::error!(listener = %spec.name, error = %format!("{e:#}"), "adding a listener failed")
            }
        }
    }
    if removed.is_empty() && added.iter().all(Vec::is_empty) {
        return;
    }
    let mut changes: Vec<(usize, ListenerChange)> = added
        .into_iter()
        .enumerate()
        .map(|(s, added)| {
            let removed = removed.clone();
            (s, ListenerChange { added, removed })
        })
        .collect();
    // This shard's part at once: the next change is compared with it.
    if let Some(i) = changes.iter().position(|(s, _)| *s == ctx.id) {
        apply(ctx, changes.remove(i).1);
    }
    let senders = ctx.senders.clone();
    compio::runtime::spawn(async move {
        for (s, change) in changes {
            let _ = senders[s].send_async(ShardMsg::Listeners(change)).await;
        }
    })
    .detach();
}

/// On shard 0, once the dynamic broker configs changed: each TLS listener whose files
/// in `live` (its own dynamic ones, else `[ssl]`'s) are not those it uses switches to
/// them. Connections accepted before keep their certificates. The files were checked
/// when the change was made; files that no longer load are logged and the old ones
/// kept. Done here, as `reconcile` loads a new listener's files: a few small reads on
/// a rare change.
pub fn switch_tls_files(ctx: &ShardContext, live: &BrokerConfig) {
    for listener in ctx.listeners.current() {
        let Some(tls) = &listener.tls else {
            continue;
        };
        let wanted = live.ssl.for_listener(&listener.name);
        if tls.settings().files() == wanted.files() {
            continue;
        }
        match tls.switch_to(&wanted) {
            Ok(()) => {
                tracing::info!(listener = %listener.name, keystore = ?wanted.keystore_location, truststore = ?wanted.truststore_location, "TLS files switched")
            }
            Err(e) => {
                tracing::error!(listener = %listener.name, error = %format!("{e:#}"), "dynamic TLS files do not load; keeping the previous ones")
            }
        }
    }
}

/// One listening socket per shard on the same address (SO_REUSEPORT); the kernel
/// spreads new connections over them. With port 0 the first bind picks the port for all.
pub fn bind(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut addr = addr;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket
            .bind(&addr.into())
            .with_context(|| format!("binding {addr}"))?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}
