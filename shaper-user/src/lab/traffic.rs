//! Traffic for the demo, the end-to-end tests and the benchmarks: a paced UDP sender and a UDP
//! sink, each a thread inside a network namespace of the lab. Bounded in time, they stop by
//! themselves (or earlier, through a shared stop flag).
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::datapath::NetNsEnter;

/// IP + UDP header bytes on top of the payload.
pub fn ip_overhead(addr: IpAddr) -> u64 {
    if addr.is_ipv4() { 28 } else { 48 }
}

#[derive(Clone, Debug)]
pub struct Flood {
    pub netns: String,
    pub dst: SocketAddr,
    /// Offered rate in IP bits per second; `None` sends as fast as one thread can.
    pub rate_bits: Option<u64>,
    pub payload: usize,
    pub duration: Duration,
    /// Pin the sending thread (and so the receive path it drives on veth) to this CPU.
    pub cpu: Option<usize>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Sent {
    pub packets: u64,
    /// IP bytes.
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Sent {
    pub fn bits_per_sec(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Received {
    pub packets: u64,
    /// IP bytes.
    pub bytes: u64,
    /// From the first to the last packet received.
    pub span: Duration,
    /// IP bytes per bin of time since the epoch (`Sink::start_binned`; empty otherwise).
    pub bins: Vec<u64>,
}

/// Pins the calling thread to `cpu` (senders, and the tests that drive a bucket from every CPU).
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the call only affects this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Starts a paced UDP sender thread; it stops after `duration` or when `stop` is set.
pub fn start_flood(f: Flood, stop: Arc<AtomicBool>) -> JoinHandle<io::Result<Sent>> {
    std::thread::spawn(move || {
        if let Some(cpu) = f.cpu {
            pin_to_cpu(cpu);
        }
        let pkt_bytes = f.payload as u64 + ip_overhead(f.dst.ip());
        let per_sec = f.rate_bits.map(|r| r as f64 / 8.0 / pkt_bytes as f64);
        send_paced(&f.netns, f.dst, f.payload, f.duration, &stop, |t| {
            per_sec.map(|p| t * p)
        })
    })
}

/// Starts a UDP sender whose rate follows `rates` (IP bits per second), one per `interval`,
/// for as long as they last: a trace's tenant replayed on the wire.
pub fn start_schedule(
    netns: String,
    dst: SocketAddr,
    payload: usize,
    interval: Duration,
    rates: Vec<u64>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<io::Result<Sent>> {
    std::thread::spawn(move || {
        let pkt_bytes = (payload as u64 + ip_overhead(dst.ip())) as f64;
        let step = interval.as_secs_f64();
        // Packets due by the start of each interval.
        let mut before = Vec::with_capacity(rates.len() + 1);
        let mut sum = 0.0;
        for r in &rates {
            before.push(sum);
            sum += *r as f64 / 8.0 / pkt_bytes * step;
        }
        let duration = interval * rates.len() as u32;
        send_paced(&netns, dst, payload, duration, &stop, |t| {
            let k = ((t / step) as usize).min(rates.len().saturating_sub(1));
            let rate = rates.get(k).map_or(0.0, |r| *r as f64 / 8.0 / pkt_bytes);
            Some(before.get(k).copied().unwrap_or(sum) + (t - k as f64 * step) * rate)
        })
    })
}

/// One [`start_schedule`] per destination, each following its own offered bytes per second,
/// one value a second: every tenant of a trace replayed on the wire at once.
pub fn start_schedules<'a>(
    netns: &str,
    flows: impl IntoIterator<Item = (SocketAddr, &'a [f64])>,
    payload: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<io::Result<Sent>>> {
    flows
        .into_iter()
        .map(|(dst, bytes)| {
            let rates = bytes.iter().map(|b| (b * 8.0) as u64).collect();
            start_schedule(
                netns.to_string(),
                dst,
                payload,
                Duration::from_secs(1),
                rates,
                stop.clone(),
            )
        })
        .collect()
}

/// Sends `payload`-byte datagrams to `dst` from `netns` until `duration` or `stop`, keeping
/// up with `due(t)`: the packets due `t` seconds in (`None`: as fast as possible).
fn send_paced(
    netns: &str,
    dst: SocketAddr,
    payload: usize,
    duration: Duration,
    stop: &AtomicBool,
    due: impl Fn(f64) -> Option<f64>,
) -> io::Result<Sent> {
    let _ns = NetNsEnter::enter(netns)?;
    let bind: SocketAddr = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(io::Error::other)?;
    let sock = UdpSocket::bind(bind)?;
    sock.connect(dst)?;
    let buf = vec![0x5au8; payload];
    let pkt_bytes = payload as u64 + ip_overhead(dst.ip());
    let start = Instant::now();
    let mut sent = Sent::default();
    // Packets the schedule is ahead of what was sent; a sender that was descheduled does not
    // catch up with a burst (which a policer would rightly drop) beyond 2 ms' worth.
    let mut skipped = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let t = elapsed.as_secs_f64();
        let target = match due(t) {
            Some(d) => {
                let max_backlog =
                    due(t + 0.002).map_or(0.0, |a| (a - d).max(0.0)).ceil() as u64 + 1;
                let mut target = (d as u64 + 1).saturating_sub(skipped);
                if target > sent.packets + max_backlog {
                    skipped += target - sent.packets - max_backlog;
                    target = sent.packets + max_backlog;
                }
                target
            }
            None => sent.packets + 64,
        };
        if sent.packets >= target {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while sent.packets < target {
            match sock.send(&buf) {
                Ok(_) => {
                    sent.packets += 1;
                    sent.bytes += pkt_bytes;
                }
                // A full socket buffer or an ICMP error from an earlier packet: not fatal.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => break,
                Err(e) => return Err(e),
            }
        }
    }
    sent.elapsed = start.elapsed();
    Ok(sent)
}

/// A bound UDP sink; bind it before the flood starts so no packet is refused.
pub struct Sink {
    sock: UdpSocket,
    addr: SocketAddr,
}

impl Sink {
    pub fn bind(netns: &str, addr: SocketAddr) -> io::Result<Sink> {
        let sock = {
            let _ns = NetNsEnter::enter(netns)?;
            UdpSocket::bind(addr)?
        };
        // A large receive buffer, so the sink never is the one dropping.
        let size: libc::c_int = 64 << 20;
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(Sink { sock, addr })
    }

    /// Counts what arrives until `deadline` passes or `stop` is set and nothing more arrives.
    pub fn start(
        self,
        deadline: Duration,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<io::Result<Received>> {
        self.start_binned(None, deadline, stop)
    }

    /// As `start`, and with `bins` = (epoch, width) also what arrived in each bin of `width`
    /// since `epoch` (what a replay scores per cycle on the receiver's side).
    pub fn start_binned(
        self,
        bins: Option<(Instant, Duration)>,
        deadline: Duration,
        stop: Arc<AtomicBool>,
    ) -> JoinHandle<io::Result<Received>> {
        std::thread::spawn(move || {
            let overhead = ip_overhead(self.addr.ip());
            let mut buf = vec![0u8; 65_536];
            let start = Instant::now();
            let mut first: Option<Instant> = None;
            let mut last = start;
            let mut r = Received::default();
            while start.elapsed() < deadline {
                match self.sock.recv(&mut buf) {
                    Ok(n) => {
                        let now = Instant::now();
                        first.get_or_insert(now);
                        last = now;
                        r.packets += 1;
                        r.bytes += n as u64 + overhead;
                        if let Some((epoch, width)) = bins {
                            let k = (now.saturating_duration_since(epoch).as_secs_f64()
                                / width.as_secs_f64()) as usize;
                            if r.bins.len() <= k {
                                r.bins.resize(k + 1, 0);
                            }
                            r.bins[k] += n as u64 + overhead;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            r.span = first.map_or(Duration::ZERO, |f| last.saturating_duration_since(f));
            Ok(r)
        })
    }
}

/// What a set of floods sent and what each destination received.
#[derive(Clone, Debug)]
pub struct FlowsResult {
    pub floods: Vec<(SocketAddr, Sent)>,
    pub received: Vec<(SocketAddr, Received)>,
}

impl FlowsResult {
    /// IP bits per second offered to `dst` by all floods, over the longest send time.
    pub fn offered_bps(&self, dst: SocketAddr) -> f64 {
        let (bytes, secs) = self.sent_to(dst);
        bytes as f64 * 8.0 / secs.max(1e-9)
    }

    /// IP bits per second received at `dst`, over the time the floods were sending.
    pub fn received_bps(&self, dst: SocketAddr) -> f64 {
        let (_, secs) = self.sent_to(dst);
        self.received_bytes(dst) as f64 * 8.0 / secs.max(1e-9)
    }

    pub fn received_bytes(&self, dst: SocketAddr) -> u64 {
        self.received
            .iter()
            .filter(|(a, _)| *a == dst)
            .map(|(_, r)| r.bytes)
            .sum()
    }

    pub fn sent_bytes(&self, dst: SocketAddr) -> u64 {
        self.sent_to(dst).0
    }

    fn sent_to(&self, dst: SocketAddr) -> (u64, f64) {
        self.floods
            .iter()
            .filter(|(a, _)| *a == dst)
            .fold((0, 0.0), |(b, t), (_, s)| {
                (b + s.bytes, f64::max(t, s.elapsed.as_secs_f64()))
            })
    }
}

/// Runs floods into sinks (one sink per distinct destination), all at once. The sinks keep
/// listening briefly after the senders stop, so packets in flight are counted.
pub fn run_flows(
    dut_ns: &str,
    floods: &[Flood],
    stop: &Arc<AtomicBool>,
) -> io::Result<FlowsResult> {
    let longest = floods.iter().map(|f| f.duration).max().unwrap_or_default();
    let sink_stop = Arc::new(AtomicBool::new(false));
    let mut sinks = Vec::new();
    for f in floods {
        if !sinks.iter().any(|(a, _)| *a == f.dst) {
            let sink = Sink::bind(dut_ns, f.dst)?;
            sinks.push((
                f.dst,
                sink.start(longest + Duration::from_secs(5), sink_stop.clone()),
            ));
        }
    }
    let senders: Vec<_> = floods
        .iter()
        .map(|f| (f.dst, start_flood(f.clone(), stop.clone())))
        .collect();
    let mut sent = Vec::new();
    let mut first_err = None;
    for (dst, s) in senders {
        match s
            .join()
            .map_err(|_| io::Error::other("sender thread panicked"))
            .and_then(|r| r)
        {
            Ok(s) => sent.push((dst, s)),
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    sink_stop.store(true, Ordering::Relaxed);
    let mut received = Vec::new();
    for (addr, h) in sinks {
        received.push((
            addr,
            h.join()
                .map_err(|_| io::Error::other("sink thread panicked"))??,
        ));
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(FlowsResult {
            floods: sent,
            received,
        }),
    }
}
