//! A small authoritative DNS server with a mutable in-memory zone of TXT records.
//!
//! It lets the test suite and the load generator run real DNS traffic on a loopback
//! port: BTPS key and host records are published with [`DnsResponder::publish_key`]
//! and [`DnsResponder::publish_host`], failures are injected per name with
//! [`DnsResponder::set_failure`], and [`DnsResponder::query_count`] shows whether a
//! cache really saved a query. `btps dns serve` runs one for trying btps on one
//! machine, its records following a running server's ([`DnsResponder::follow`]).
//!
//! It answers every name (it is authoritative for the whole tree): TXT records where
//! set, NODATA (NOERROR, no answer) for a name that exists without TXT records or that
//! only has names below it, NXDOMAIN otherwise. Negative answers carry an SOA whose
//! minimum is the configured TTL. UDP answers larger than the client's EDNS buffer
//! (512 bytes without EDNS) are truncated so that the client repeats over TCP, which is
//! served on the same port.
//!
//! The server runs on its own thread with its own single-threaded Tokio runtime, so it
//! works from synchronous code and from any runtime; dropping it stops it.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;

use super::Identity;
use super::dns::{host_record_text, key_record_text};

/// The largest character-string a TXT record can hold.
const MAX_CHARACTER_STRING: usize = 255;
/// The UDP answer size a client without EDNS accepts.
const CLASSIC_UDP_LIMIT: usize = 512;
/// The largest UDP answer sent even to a client announcing more.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// A failure to inject for one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// Answer SERVFAIL.
    ServFail,
    /// Answer REFUSED.
    Refused,
    /// Do not answer at all, so that the client times out.
    Drop,
}

/// A running authoritative DNS server on UDP and TCP (see the module documentation).
pub struct DnsResponder {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// Where [`DnsResponder::follow`] reads the zone from before each answer: every
/// name with its TXT records (one string per record), or `None` to keep the records
/// the responder has.
pub type ZoneSource = dyn Fn() -> Option<Vec<(String, Vec<String>)>> + Send + Sync;

struct Shared {
    zone: Mutex<Zone>,
    ttl: AtomicU32,
    queries: AtomicU64,
    source: Mutex<Option<Arc<ZoneSource>>>,
}

#[derive(Default)]
struct Zone {
    /// Lower-cased name without final dot → TXT records, each a list of
    /// character-strings.
    records: HashMap<String, Vec<Vec<Vec<u8>>>>,
    failures: HashMap<String, Failure>,
    queries_by_name: HashMap<String, u64>,
}

impl DnsResponder {
    /// The TTL of answers until [`DnsResponder::set_ttl`] changes it, in seconds.
    pub const DEFAULT_TTL: u32 = 300;

    /// Binds UDP and TCP on `addr` (port 0 picks a port free for both) and starts
    /// serving an empty zone.
    pub fn start(addr: SocketAddr) -> io::Result<Self> {
        let (udp, tcp) = bind_both(addr)?;
        let local_addr = udp.local_addr()?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            zone: Mutex::new(Zone::default()),
            ttl: AtomicU32::new(Self::DEFAULT_TTL),
            queries: AtomicU64::new(0),
            source: Mutex::new(None),
        });
        let (stop, stopped) = watch::channel(false);
        let (ready_sender, ready) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("dns-responder".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_sender.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let sockets = UdpSocket::from_std(udp)
                        .and_then(|udp| Ok((udp, TcpListener::from_std(tcp)?)));
                    match sockets {
                        Ok((udp, tcp)) => {
                            let _ = ready_sender.send(Ok(()));
                            serve(thread_shared, udp, tcp, stopped).await;
                        }
                        Err(error) => {
                            let _ = ready_sender.send(Err(error));
                        }
                    }
                });
            })?;
        let started = ready.recv().unwrap_or_else(|_| {
            Err(io::Error::other(
                "the DNS responder thread ended during start-up",
            ))
        });
        let mut responder = DnsResponder {
            shared,
            local_addr,
            stop,
            thread: Some(thread),
        };
        match started {
            Ok(()) => Ok(responder),
            Err(error) => {
                responder.shut_down();
                Err(error)
            }
        }
    }

    /// The address the server listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets the TTL of all answers from now on (negative answers included, through
    /// the SOA minimum).
    pub fn set_ttl(&self, seconds: u32) {
        self.shared.ttl.store(seconds, Ordering::Relaxed);
    }

    /// Replaces the TXT records of `name`: one record per string, each string split
    /// into character-strings of at most 255 bytes. An empty list makes the name exist
    /// without TXT records (NODATA).
    pub fn set_txt(&self, name: &str, records: Vec<String>) {
        let records = records
            .into_iter()
            .map(|text| split_character_strings(text.as_bytes()))
            .collect();
        self.set_txt_raw(name, records);
    }

    /// Replaces the TXT records of `name` with exactly these records and
    /// character-strings (each at most 255 bytes; longer ones are split).
    pub fn set_txt_raw(&self, name: &str, records: Vec<Vec<Vec<u8>>>) {
        let records = records
            .into_iter()
            .map(|strings| {
                strings
                    .iter()
                    .flat_map(|string| split_character_strings(string))
                    .collect()
            })
            .collect();
        self.zone().records.insert(zone_key(name), records);
    }

    /// Replaces every TXT record with `records` (name, one string per record): the
    /// names not listed answer NXDOMAIN again. Injected failures stay.
    pub fn replace_all(&self, records: Vec<(String, Vec<String>)>) {
        self.shared.install(records);
    }

    /// Makes the answers follow a zone kept elsewhere: before each query is
    /// answered, `source` is asked for the whole zone, and what it returns replaces
    /// every TXT record ([`DnsResponder::replace_all`]); `None` keeps the records
    /// as they are. `source` runs on the responder's thread, one query at a time,
    /// so a slow source delays the answers (it should time out well within a
    /// resolver's patience).
    pub fn follow(
        &self,
        source: impl Fn() -> Option<Vec<(String, Vec<String>)>> + Send + Sync + 'static,
    ) {
        *self
            .shared
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(source));
    }

    /// Removes `name` (it answers NXDOMAIN again, unless names exist below it).
    pub fn remove(&self, name: &str) {
        self.zone().records.remove(&zone_key(name));
    }

    /// Makes queries of `name` fail as given, whatever its records.
    pub fn set_failure(&self, name: &str, failure: Failure) {
        self.zone().failures.insert(zone_key(name), failure);
    }

    /// Makes `name` answer normally again.
    pub fn clear_failure(&self, name: &str) {
        self.zone().failures.remove(&zone_key(name));
    }

    /// Publishes the key record of `identity` under `selector`:
    /// `<selector>._btps.identity.<account>.<domain>  TXT "v=1.0.0; k=rsa; p=…"`.
    pub fn publish_key(&self, identity: &Identity, selector: &str, spki_base64: &str) {
        self.set_txt(
            &identity.key_record_name(selector),
            vec![key_record_text(spki_base64)],
        );
    }

    /// Publishes the host record of `domain`:
    /// `_btps.host.<domain>  TXT "v=1.0.0; u=<address>; s=<selector>"`.
    pub fn publish_host(&self, domain: &str, address: &str, selector: &str) {
        self.set_txt(
            &format!("_btps.host.{domain}"),
            vec![host_record_text(address, selector)],
        );
    }

    /// Queries received so far (all names, over UDP and TCP, answered or not).
    pub fn query_count(&self) -> u64 {
        self.shared.queries.load(Ordering::Relaxed)
    }

    /// Queries of `name` received so far.
    pub fn query_count_for(&self, name: &str) -> u64 {
        self.zone()
            .queries_by_name
            .get(&zone_key(name))
            .copied()
            .unwrap_or(0)
    }

    fn zone(&self) -> MutexGuard<'_, Zone> {
        self.shared.zone()
    }

    fn shut_down(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl std::fmt::Debug for DnsResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResponder")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn zone(&self) -> MutexGuard<'_, Zone> {
        // A panic while holding the lock leaves the zone usable: every change to it
        // is a single insert, remove or replacement.
        self.zone.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the followed source, if any, for the zone and installs what it returns.
    /// The source runs without the zone's lock held.
    fn refresh(&self) {
        let source = self
            .source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(records) = source.and_then(|source| source()) {
            self.install(records);
        }
    }

    /// Replaces every TXT record (see [`DnsResponder::replace_all`]).
    fn install(&self, records: Vec<(String, Vec<String>)>) {
        let records = records
            .into_iter()
            .map(|(name, texts)| {
                let texts = texts
                    .into_iter()
                    .map(|text| split_character_strings(text.as_bytes()))
                    .collect();
                (zone_key(&name), texts)
            })
            .collect();
        self.zone().records = records;
    }
}

/// Binds UDP and TCP on the same port. With port 0 the UDP port is chosen first and
/// may be taken for TCP; another port is tried then.
fn bind_both(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut attempts = 0;
    loop {
        let udp = std::net::UdpSocket::bind(addr)?;
        match std::net::TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error)
                if addr.port() == 0
                    && error.kind() == io::ErrorKind::AddrInUse
                    && attempts < 16 =>
            {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    udp: UdpSocket,
    tcp: TcpListener,
    mut stopped: watch::Receiver<bool>,
) {
    let mut buffer = vec![0_u8; 65_535];
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            received = udp.recv_from(&mut buffer) => {
                // A receive error on UDP (e.g. ICMP port unreachable from an earlier
                // reply) concerns one datagram only.
                let Ok((length, peer)) = received else { continue };
                if let Some(reply) = respond(&shared, &buffer[..length], Transport::Udp) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
            accepted = tcp.accept() => {
                if let Ok((stream, _)) = accepted {
                    // Tasks end with the runtime when the responder stops.
                    tokio::spawn(serve_tcp(Arc::clone(&shared), stream));
                }
            }
        }
    }
}

/// Serves length-prefixed queries on one TCP connection until the client closes it.
async fn serve_tcp(shared: Arc<Shared>, mut stream: TcpStream) {
    loop {
        let Ok(length) = stream.read_u16().await else {
            return;
        };
        let mut query = vec![0_u8; usize::from(length)];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(reply) = respond(&shared, &query, Transport::Tcp) else {
            continue;
        };
        let Ok(reply_length) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_u16(reply_length).await.is_err() || stream.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// The encoded answer to one query, or `None` when no answer is to be sent (not a
/// query, undecodable, or a [`Failure::Drop`]).
fn respond(shared: &Shared, query_bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let request = Message::from_vec(query_bytes).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    shared.queries.fetch_add(1, Ordering::Relaxed);
    let ttl = shared.ttl.load(Ordering::Relaxed);

    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_authoritative(true)
        .set_recursion_desired(request.recursion_desired());
    if let Some(edns) = request.extensions() {
        let mut ours = Edns::new();
        ours.set_max_payload(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        response.set_edns(ours);
    }
    let udp_limit = request
        .extensions()
        .as_ref()
        .map_or(CLASSIC_UDP_LIMIT, |edns| {
            usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD))
        });

    let [query] = request.queries() else {
        response.set_response_code(ResponseCode::FormErr);
        return response.to_vec().ok();
    };
    response.add_query(query.clone());
    if request.op_code() != OpCode::Query {
        response.set_response_code(ResponseCode::NotImp);
        return response.to_vec().ok();
    }

    shared.refresh();
    let key = wire_zone_key(query.name());
    let answers = {
        let mut zone = shared.zone();
        *zone.queries_by_name.entry(key.clone()).or_default() += 1;
        match zone.failures.get(&key) {
            Some(Failure::Drop) => return None,
            Some(Failure::ServFail) => Err(ResponseCode::ServFail),
            Some(Failure::Refused) => Err(ResponseCode::Refused),
            None => match zone.records.get(&key) {
                Some(records) => Ok(records.clone()),
                None if zone.has_names_below(&key) => Ok(Vec::new()),
                None => Err(ResponseCode::NXDomain),
            },
        }
    };
    match answers {
        Ok(records) => {
            if matches!(query.query_type(), RecordType::TXT | RecordType::ANY) {
                for strings in &records {
                    let txt = TXT::from_bytes(strings.iter().map(Vec::as_slice).collect());
                    response.add_answer(Record::from_rdata(
                        query.name().clone(),
                        ttl,
                        RData::TXT(txt),
                    ));
                }
            }
            if response.answers().is_empty() {
                response.add_name_server(negative_soa(ttl));
            }
        }
        Err(code @ ResponseCode::NXDomain) => {
            response.set_response_code(code);
            response.add_name_server(negative_soa(ttl));
        }
        Err(code) => {
            response.set_response_code(code);
        }
    }

    let encoded = response.to_vec().ok()?;
    if transport == Transport::Udp && encoded.len() > udp_limit {
        // Too big for the client's buffer: send the header and question with TC set,
        // and the client repeats the query over TCP.
        response.take_answers();
        response.take_name_servers();
        response.set_truncated(true);
        return response.to_vec().ok();
    }
    Some(encoded)
}

impl Zone {
    /// Whether some name lies below `name` (an "empty non-terminal", which exists and
    /// answers NODATA rather than NXDOMAIN).
    fn has_names_below(&self, name: &str) -> bool {
        let suffix = format!(".{name}");
        self.records.keys().any(|other| other.ends_with(&suffix))
    }
}

/// The SOA sent with negative answers; its minimum is what resolvers use as the
/// negative-caching TTL (RFC 2308).
fn negative_soa(ttl: u32) -> Record {
    // The responder serves every name, so its "zone apex" is the root.
    let soa = SOA::new(Name::root(), Name::root(), 1, 3600, 600, 86_400, ttl);
    Record::from_rdata(Name::root(), ttl, RData::SOA(soa))
}

/// The zone's key for a name given as text: lower-cased (DNS names compare
/// case-insensitively), without the final dot, non-ASCII labels in their punycode
/// form as they arrive in queries. ASCII is kept byte for byte, like the resolver
/// sends it.
fn zone_key(name: &str) -> String {
    let ascii = if name.is_ascii() {
        name.to_owned()
    } else {
        Name::from_utf8(name).map_or_else(|_| name.to_owned(), |name| name.to_ascii())
    };
    ascii
        .strip_suffix('.')
        .unwrap_or(&ascii)
        .to_ascii_lowercase()
}

/// The zone's key for a queried name: its raw labels joined with dots (hickory's
/// `to_ascii` would escape bytes such as `+`), lower-cased.
fn wire_zone_key(name: &Name) -> String {
    name.iter()
        .map(|label| String::from_utf8_lossy(label).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

/// Splits a value into character-strings of at most 255 bytes (one empty string for
/// an empty value, which is still a TXT record).
fn split_character_strings(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return vec![Vec::new()];
    }
    bytes
        .chunks(MAX_CHARACTER_STRING)
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_split_at_255_bytes() {
        let value = vec![b'a'; 600];
        let strings = split_character_strings(&value);
        assert_eq!(
            strings.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![255, 255, 90]
        );
        assert_eq!(strings.concat(), value);
        assert_eq!(split_character_strings(b""), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn zone_keys_ignore_case_and_final_dot() {
        assert_eq!(
            zone_key("BTPS1._btps.Identity.X.Test."),
            "btps1._btps.identity.x.test"
        );
        assert_eq!(
            zone_key("_btps.host.Örnek.test"),
            "_btps.host.xn--rnek-4qa.test"
        );
        let wire = Name::from_labels([&b"A+b"[..], b"Test"]).unwrap();
        assert_eq!(wire_zone_key(&wire), zone_key("a+B.test."));
    }
}
