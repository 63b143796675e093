//! Packet sockets: creation, binding, options, promiscuous membership, fanout.

use super::{getsockopt, set_int_opt, setsockopt};
use std::io;
use std::mem::zeroed;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const TPACKET_V3: libc::c_int = 2;
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "ETH_P_ALL is 0x0003")]
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "AF_PACKET is 17")]
const AF_PACKET: u16 = libc::AF_PACKET as u16;
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "PACKET_MR_PROMISC is 1")]
const PACKET_MR_PROMISC: u16 = libc::PACKET_MR_PROMISC as u16;

/// An ifindex as the kernel's `int` fields take it.
fn ifindex_int(ifindex: u32) -> io::Result<i32> {
    i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// A new AF_PACKET raw socket (close-on-exec, non-blocking) that receives
/// nothing until bound.
pub fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall, no pointers.
    let fd = syscall!(unsafe {
        libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0)
    })?;
    // SAFETY: fd was just returned by socket() and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_packet_version_v3(fd: BorrowedFd<'_>) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, TPACKET_V3)
}

/// Reads and clears the socket's pending error (SO_ERROR).
pub fn take_socket_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let mut v: libc::c_int = 0;
    getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut v)?;
    Ok((v != 0).then(|| io::Error::from_raw_os_error(v)))
}

/// Drops what waits in the socket's receive queue, at most `max` frames,
/// without reading it; returns how many.
pub fn discard_queued(fd: BorrowedFd<'_>, max: usize) -> usize {
    let mut n = 0;
    while n < max {
        // SAFETY: a zero-length receive into no buffer; MSG_TRUNC takes the datagram off
        // the queue whole without copying anything.
        let r = syscall!(unsafe {
            libc::recv(fd.as_raw_fd(), std::ptr::null_mut(), 0, libc::MSG_DONTWAIT | libc::MSG_TRUNC)
        });
        if r.is_err() {
            break;
        }
        n += 1;
    }
    n
}

/// Frames dropped by the kernel since the last call (PACKET_STATISTICS).
pub fn packet_drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: tpacket_stats_v3 is plain old data; all-zero is valid.
    let mut st: libc::tpacket_stats_v3 = unsafe { zeroed() };
    getsockopt(fd, libc::SOL_PACKET, libc::PACKET_STATISTICS, &mut st)?;
    Ok(st.tp_drops)
}

/// Binds the socket to `ifindex` for all protocols.
pub fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    bind_packet_protocol(fd, ifindex, ETH_P_ALL_BE)
}

/// Binds the socket to `ifindex` for `protocol` (network byte order); 0
/// receives nothing (a socket that only sends).
pub(crate) fn bind_packet_protocol(fd: BorrowedFd<'_>, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = protocol;
    sll.sll_ifindex = ifindex_int(ifindex)?;
    // SAFETY: sll is a live sockaddr_ll and the length matches it.
    syscall!(unsafe {
        libc::bind(fd.as_raw_fd(), (&sll as *const libc::sockaddr_ll).cast(), super::socklen_of::<libc::sockaddr_ll>())
    })
    .map(drop)
}

/// Puts the interface into promiscuous mode for as long as the socket lives.
pub fn add_promisc(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: packet_mreq is plain old data; all-zero is valid.
    let mut mr: libc::packet_mreq = unsafe { zeroed() };
    mr.mr_ifindex = ifindex_int(ifindex)?;
    mr.mr_type = PACKET_MR_PROMISC;
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr)
}

/// PACKET_FANOUT flag: the kernel picks a group id no one else uses.
const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
/// PACKET_FANOUT flag (Linux 6.2): the group ignores outgoing frames. A
/// group has its own packet hook, so its members' PACKET_IGNORE_OUTGOING no
/// longer applies; without this flag the group would receive what the host
/// sends on the interface.
const PACKET_FANOUT_FLAG_IGNORE_OUTGOING: u32 = 0x4000;

/// PACKET_FANOUT mode: a classic BPF program (set with PACKET_FANOUT_DATA)
/// picks the socket: its return value modulo the group's size.
const PACKET_FANOUT_CBPF: u32 = 6;
/// Sets the program of a CBPF fanout group.
const PACKET_FANOUT_DATA: libc::c_int = 22;

/// How a fanout group spreads frames over its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// By the CPU the frame arrived on.
    Cpu,
    /// TCP and UDP by the flow hash their sending socket gave them (one
    /// flow, one reader: its frames are never reordered between readers);
    /// everything else by CPU, and so is UDP without a hash (an unconnected
    /// socket's, a raw flood's from a packet socket such as trafgen's).
    FlowOrCpu,
}

/// Which members a group's program picks: member `offset + x % members`,
/// where `x` is what the [`Fanout`] spreads by. A group of `members`
/// receive halves steers to them with offset 0; the RX slots a busy port
/// appends after them (`crate::busy`) are `members..2 * members`, picked
/// by offset `members`. The kernel takes the result modulo the group's
/// size, so while fewer sockets are joined the result still falls on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steer {
    pub members: u32,
    pub offset: u32,
}

/// The group's program. At fanout time the frame's data starts at its
/// network header (the kernel runs the group's program before a packet
/// socket pushes the MAC header back), so the IP protocol is byte 9 of an
/// IPv4 header and the next header byte 6 of an IPv6 one; the EtherType,
/// the flow hash and the CPU are ancillary loads. Jumps are relative: the
/// next instruction is `pc + 1 + offset`.
///
/// ```text
/// FlowOrCpu                              Cpu
/// 0  A = skb->protocol   (ancillary)    0  A = cpu
/// 1  if A == 0x0800 goto 4  (IPv4)      1  A %= members
/// 2  if A == 0x86dd goto 6  (IPv6)      2  A += offset
/// 3  goto 12             (other: CPU)   3  return A
/// 4  A = byte [9]        (IPv4 protocol)
/// 5  goto 7
/// 6  A = byte [6]        (IPv6 next header)
/// 7  if A == 6 goto 9    (TCP)
/// 8  if A != 17 goto 12  (nor UDP: by CPU)
/// 9  A = skb->hash       (ancillary)
/// 10 if A == 0 goto 12   (no hash: by CPU)
/// 11 goto 13
/// 12 A = cpu             (ancillary)
/// 13 A %= members
/// 14 A += offset
/// 15 return A
/// ```
fn fanout_program(mode: Fanout, steer: Steer) -> Vec<libc::sock_filter> {
    #[allow(clippy::cast_possible_truncation, reason = "BPF opcodes fit 16 bits")]
    let op = |c: u32| c as u16;
    let s = |code: u32, k: u32| libc::sock_filter { code: op(code), jt: 0, jf: 0, k };
    let j = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter { code: op(code), jt, jf, k };
    let ad = |k: libc::c_int| (libc::SKF_AD_OFF + k).cast_unsigned();
    let (ld_w, ld_h, ld_b) = (
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
    );
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ja = libc::BPF_JMP | libc::BPF_JA;
    let tail = [
        s(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, steer.members.max(1)),
        s(libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K, steer.offset),
        s(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let head = match mode {
        Fanout::Cpu => vec![s(ld_w, ad(libc::SKF_AD_CPU))],
        Fanout::FlowOrCpu => vec![
            /* 0 */ s(ld_h, ad(libc::SKF_AD_PROTOCOL)),
            /* 1 */ j(jeq, 0x0800, 2, 0),
            /* 2 */ j(jeq, 0x86dd, 3, 0),
            /* 3 */ s(ja, 8),
            /* 4 */ s(ld_b, 9),
            /* 5 */ s(ja, 1),
            /* 6 */ s(ld_b, 6),
            /* 7 */ j(jeq, 6, 1, 0),
            /* 8 */ j(jeq, 17, 0, 3),
            /* 9 */ s(ld_w, ad(libc::SKF_AD_RXHASH)),
            /* 10 */ j(jeq, 0, 1, 0),
            /* 11 */ s(ja, 1),
            /* 12 */ s(ld_w, ad(libc::SKF_AD_CPU)),
        ],
    };
    head.into_iter().chain(tail).collect()
}

/// Joins `fd` (bound to its interface) to fanout group `group` in CBPF
/// mode, ignoring outgoing frames; `group` 0 asks the kernel for a new
/// unique id and gives the group the program of `mode` and `steer`. Returns
/// the group's id. EINVAL on kernels before 6.2.
pub fn join_fanout(fd: BorrowedFd<'_>, group: u16, mode: Fanout, steer: Steer) -> io::Result<u16> {
    let flags = PACKET_FANOUT_FLAG_IGNORE_OUTGOING | if group == 0 { PACKET_FANOUT_FLAG_UNIQUEID } else { 0 };
    let arg: u32 = u32::from(group) | ((PACKET_FANOUT_CBPF | flags) << 16);
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg)?;
    if group == 0 {
        steer_fanout(fd, mode, steer)?;
    }
    let mut v: u32 = 0;
    getsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &mut v)?;
    Ok(u16::try_from(v & 0xffff).unwrap_or(0))
}

/// The id of the fanout group `fd` is a member of, if any (a socket
/// handed over by another daemon keeps its membership).
pub fn fanout_group(fd: BorrowedFd<'_>) -> io::Result<Option<u16>> {
    let mut v: u32 = 0;
    match getsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &mut v) {
        Ok(()) => Ok((v != 0).then(|| u16::try_from(v & 0xffff).unwrap_or(0))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the program of the group `fd` is a member of (the kernel swaps
/// it under RCU: each frame sees the old program or the new one).
pub fn steer_fanout(fd: BorrowedFd<'_>, mode: Fanout, steer: Steer) -> io::Result<()> {
    let mut prog = fanout_program(mode, steer);
    let len = u16::try_from(prog.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fprog = libc::sock_fprog { len, filter: prog.as_mut_ptr() };
    setsockopt(fd, libc::SOL_PACKET, PACKET_FANOUT_DATA, &fprog)
}

/// Attaches a socket filter that drops every frame (`drop_all`), or takes
/// it off. A socket must be bound before it may join a fanout group, and
/// until it has joined it would receive a copy of every frame.
pub fn drop_all(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    if !on {
        return setsockopt(fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &0);
    }
    #[allow(clippy::cast_possible_truncation, reason = "BPF opcodes fit 16 bits")]
    let mut prog = [libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: 0 }];
    let fprog = libc::sock_fprog { len: 1, filter: prog.as_mut_ptr() };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// The ethertypes a port takes from protocol sockets, after tc ingress,
/// while its interface has an ingress qdisc (`afpacket::shaped`).
pub const AFTER_TC: [u16; 3] = [0x0800, 0x86dd, 0x0806];

/// The filter of a port's ETH_P_ALL sockets while its interface has an
/// ingress qdisc: every frame but those of [`AFTER_TC`] (the protocol is the
/// inner one of a tagged frame, whose tag the kernel strips before protocol
/// sockets see it).
#[allow(clippy::cast_possible_truncation, reason = "BPF opcodes fit 16 bits")]
fn skip_after_tc_program() -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    let n = AFTER_TC.len();
    let mut p = vec![op(
        libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
        0,
        0,
        (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL).cast_unsigned(),
    )];
    for (i, t) in AFTER_TC.iter().enumerate() {
        // A match jumps to the last instruction (drop); the rest fall through to "keep".
        p.push(op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, (n - i) as u8, 0, u32::from(*t)));
    }
    p.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX));
    p.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, 0));
    p
}

/// Leaves the frames of [`AFTER_TC`] out of what `fd` receives (`on`), or
/// takes the filter off. Attaching replaces a filter at once: each frame
/// sees the old filter or the new one.
pub fn skip_after_tc(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    if !on {
        return match setsockopt(fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &0) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        };
    }
    let mut prog = skip_after_tc_program();
    let len = u16::try_from(prog.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fprog = libc::sock_fprog { len, filter: prog.as_mut_ptr() };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
}

/// Bytes of the first frame waiting in the socket's receive queue; 0 when
/// none waits (SIOCINQ).
pub fn first_queued_len(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCINQ writes one int through the pointer, which points to a live int.
    syscall!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) })?;
    Ok(usize::try_from(n).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    /// Runs a cBPF program (the opcodes the fanout program uses) on
    /// `net` (from the network header) with `protocol`, `hash` and `cpu`.
    fn run(prog: &[libc::sock_filter], protocol: u32, net: &[u8], hash: u32, cpu: u32) -> u32 {
        let ad = |k: libc::c_int| (libc::SKF_AD_OFF + k).cast_unsigned();
        let (mut a, mut pc) = (0u32, 0usize);
        for _ in 0..64 {
            let f = prog[pc];
            let code = u32::from(f.code);
            pc += 1;
            match code {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS
                    || c == libc::BPF_LD | libc::BPF_H | libc::BPF_ABS =>
                {
                    a = match f.k {
                        k if k == ad(libc::SKF_AD_PROTOCOL) => protocol,
                        k if k == ad(libc::SKF_AD_RXHASH) => hash,
                        k if k == ad(libc::SKF_AD_CPU) => cpu,
                        k => panic!("load of {k}"),
                    }
                }
                c if c == libc::BPF_LD | libc::BPF_B | libc::BPF_ABS => a = u32::from(net[f.k as usize]),
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += f.k as usize,
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += usize::from(if a == f.k { f.jt } else { f.jf })
                }
                c if c == libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K => a %= f.k,
                c if c == libc::BPF_ALU | libc::BPF_ADD | libc::BPF_K => a += f.k,
                c if c == libc::BPF_RET | libc::BPF_A => return a,
                c if c == libc::BPF_RET | libc::BPF_K => return f.k,
                c => panic!("opcode {c:#x}"),
            }
        }
        panic!("the program did not return")
    }

    #[test]
    fn tcp_and_udp_go_by_flow_the_rest_by_cpu() {
        use super::{Fanout, Steer, fanout_program};
        // A large group, so the results are the raw hash and CPU.
        let p = fanout_program(Fanout::FlowOrCpu, Steer { members: 1 << 30, offset: 0 });
        let mut v4 = [0u8; 20];
        v4[9] = 6;
        assert_eq!(run(&p, 0x0800, &v4, 0xabcd, 1), 0xabcd, "IPv4 TCP: its hash");
        assert_eq!(run(&p, 0x0800, &v4, 0, 1), 1, "no hash: the CPU");
        v4[9] = 17;
        assert_eq!(run(&p, 0x0800, &v4, 0xabcd, 1), 0xabcd, "IPv4 UDP: its hash");
        assert_eq!(run(&p, 0x0800, &v4, 0, 1), 1, "UDP with no hash (a raw flood, an unconnected socket): the CPU");
        v4[9] = 1;
        assert_eq!(run(&p, 0x0800, &v4, 0xabcd, 1), 1, "ICMP: the CPU");
        let mut v6 = [0u8; 40];
        v6[6] = 17;
        assert_eq!(run(&p, 0x86dd, &v6, 0x5678, 0), 0x5678, "IPv6 UDP: its hash");
        v6[6] = 6;
        assert_eq!(run(&p, 0x86dd, &v6, 0x1234, 0), 0x1234, "IPv6 TCP: its hash");
        v6[6] = 58;
        assert_eq!(run(&p, 0x86dd, &v6, 0x1234, 0), 0, "ICMPv6: the CPU");
        assert_eq!(run(&p, 0x0806, &v4, 0x1234, 1), 1, "ARP: the CPU");
    }

    #[test]
    fn the_program_picks_a_member_of_its_own_half_of_the_group() {
        // Members 0..3 are the receive halves, 3..6 the RX slots appended
        // after them: each half's program stays in its half, whatever the hash
        // or CPU, and a frame goes to the same index in either half.
        use super::{Fanout, Steer, fanout_program};
        let mut tcp = [0u8; 20];
        tcp[9] = 6;
        for mode in [Fanout::Cpu, Fanout::FlowOrCpu] {
            let socks = fanout_program(mode, Steer { members: 3, offset: 0 });
            let slots = fanout_program(mode, Steer { members: 3, offset: 3 });
            for (hash, cpu) in [(0xabcd, 0), (0xffff_ffff, 1), (7, 5), (0, 63)] {
                let a = run(&socks, 0x0800, &tcp, hash, cpu);
                let b = run(&slots, 0x0800, &tcp, hash, cpu);
                assert!(a < 3, "{mode:?} {hash:#x} {cpu}: {a}");
                assert_eq!(b, a + 3, "{mode:?} {hash:#x} {cpu}");
            }
        }
    }

    #[test]
    fn a_shaped_ports_all_protocols_socket_leaves_ip_ipv6_and_arp_to_the_protocol_sockets() {
        let p = super::skip_after_tc_program();
        for t in super::AFTER_TC {
            assert_eq!(run(&p, u32::from(t), &[], 0, 0), 0, "{t:#06x} dropped");
        }
        for t in [0x88cc, 0x8100, 0x88a8, 0x0842, 0x8035, 0x0801] {
            assert_eq!(run(&p, t, &[], 0, 0), u32::MAX, "{t:#06x} kept whole");
        }
    }
}
