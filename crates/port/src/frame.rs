//! Frames as the ports hand them over: a received frame borrowed from the
//! port, and a frame to send with the VLAN tag changes made on the way out.

use crate::VnetHdr;

/// A received frame, borrowed from the port until the next `recv_batch`.
#[derive(Debug, Clone, Copy)]
pub struct RxFrame<'a> {
    /// The frame from the destination MAC on (offloaded tag not included).
    pub data: &'a [u8],
    /// Offload metadata (GSO, partial checksum) when the port delivers it.
    pub vnet: Option<VnetHdr>,
    /// The 802.1Q/802.1ad tag the kernel removed from the frame, if any:
    /// (TPID, TCI). It must be re-inserted when the frame is forwarded.
    pub offloaded_tag: Option<(u16, u16)>,
    /// The frame's length on the wire; more than `data.len()` if the port
    /// could capture only part of it.
    pub wire_len: u32,
}

/// A frame to send: bytes plus the offload metadata, and the tag changes a
/// VLAN-filtering switch makes on the way out. On the wire it is
/// `data[..12]`, then the outer tag, then the inserted tag, then the rest
/// of `data` (from byte 16 when the frame's own tag is stripped).
///
/// 40 bytes, the tag changes packed in one word: the datapath copies a
/// frame into every egress batch, and a copy that reads back a field just
/// written in narrower pieces stalls on store forwarding (measured:
/// docs/benchmarks-history.md).
#[derive(Debug, Clone, Copy)]
pub struct TxFrame<'a> {
    pub data: &'a [u8],
    pub vnet: Option<VnetHdr>,
    tags: Tags,
}

/// The tag changes of a [`TxFrame`], in one word: the inserted tag's TCI
/// (bits 0-15) and TPID (16-31), the outer 802.1Q tag's TCI (32-47), and
/// flags (48-): inserted tag present, outer tag present, strip the frame's tag.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tags(u64);

impl Tags {
    const INSERT: u64 = 1 << 48;
    const OUTER: u64 = 1 << 49;
    const STRIP: u64 = 1 << 50;
    const INSERT_MASK: u64 = 0xffff_ffff;
    const OUTER_MASK: u64 = 0xffff << 32;

    /// The bits of an inserted tag (TPID, TCI).
    #[inline]
    fn insert((tpid, tci): (u16, u16)) -> u64 {
        Tags::INSERT | u64::from(tpid) << 16 | u64::from(tci)
    }
}

impl<'a> TxFrame<'a> {
    /// A frame as received: its bytes, offload metadata and offloaded tag.
    #[inline]
    pub fn new(data: &'a [u8], vnet: Option<VnetHdr>, insert_tag: Option<(u16, u16)>) -> TxFrame<'a> {
        let tags = match insert_tag {
            Some(tag) if data.len() >= 12 => Tags(Tags::insert(tag)),
            _ => Tags(0),
        };
        TxFrame { data, vnet, tags }
    }

    /// The tag inserted after the source MAC: (TPID, TCI). The tag the
    /// kernel took off on receive goes back here.
    #[inline]
    pub fn insert_tag(&self) -> Option<(u16, u16)> {
        let t = self.tags.0;
        // The casts take the halves they name.
        #[allow(clippy::cast_possible_truncation)]
        (t & Tags::INSERT != 0).then_some(((t >> 16) as u16, t as u16))
    }

    /// The 802.1Q tag put in front of every other (its TCI): the egress
    /// VLAN's tag for a frame that came in without one.
    #[inline]
    pub fn outer_tag(&self) -> Option<u16> {
        let t = self.tags.0;
        #[allow(clippy::cast_possible_truncation)]
        (t & Tags::OUTER != 0).then_some((t >> 32) as u16)
    }

    /// Whether the 802.1Q tag the frame carries at bytes 12..16 is left out
    /// (set only on a frame of 16 bytes or more: [`TxFrame::with_strip_tag`]).
    #[inline]
    pub fn strip_tag(&self) -> bool {
        self.tags.0 & Tags::STRIP != 0
    }

    /// The tag to insert (none on a frame too short to hold one).
    #[inline]
    pub fn with_insert_tag(mut self, tag: Option<(u16, u16)>) -> TxFrame<'a> {
        self.tags.0 &= !(Tags::INSERT | Tags::INSERT_MASK);
        if let Some(tag) = tag.filter(|_| self.data.len() >= 12) {
            self.tags.0 |= Tags::insert(tag);
        }
        self
    }

    /// The outer 802.1Q tag's TCI (none on a frame too short to hold one).
    #[inline]
    pub fn with_outer_tag(mut self, tci: Option<u16>) -> TxFrame<'a> {
        self.tags.0 &= !(Tags::OUTER | Tags::OUTER_MASK);
        if let Some(tci) = tci.filter(|_| self.data.len() >= 12) {
            self.tags.0 |= Tags::OUTER | u64::from(tci) << 32;
        }
        self
    }

    /// Strips the frame's own tag (a frame shorter than 16 bytes has none).
    #[inline]
    pub fn with_strip_tag(mut self, strip: bool) -> TxFrame<'a> {
        self.tags.0 =
            if strip && self.data.len() >= 16 { self.tags.0 | Tags::STRIP } else { self.tags.0 & !Tags::STRIP };
        self
    }

    /// Whether it leaves with any tag spliced in.
    #[inline]
    pub fn adds_tags(&self) -> bool {
        self.tags.0 & (Tags::INSERT | Tags::OUTER) != 0
    }

    /// Bytes this frame occupies on the wire (tags are set only on frames
    /// long enough to hold them).
    #[inline]
    pub fn wire_len(&self) -> usize {
        let t = self.tags.0;
        // The common case, one well-predicted test: no tag changes.
        if t == 0 {
            return self.data.len();
        }
        // 4 for each of the inserted and outer tags, minus 4 for a stripped one.
        let four = |bit: u32| usize::from(u8::from(t >> bit & 1 != 0)) << 2;
        self.data.len() + four(48) + four(49) - four(50)
    }

    /// The frame as three pieces: the bytes up to the tags, the tags to
    /// splice in (up to two, `.1` bytes of `.0`), and the rest.
    #[inline]
    pub fn parts(&self) -> (&'a [u8], ([u8; 8], usize), &'a [u8]) {
        let mut tags = [0u8; 8];
        let mut n = 0;
        let outer = self.outer_tag().map(|tci| (ub_wire::ETHERTYPE_8021Q, tci));
        for (tpid, tci) in [outer, self.insert_tag()].into_iter().flatten() {
            tags[n..n + 2].copy_from_slice(&tpid.to_be_bytes());
            tags[n + 2..n + 4].copy_from_slice(&tci.to_be_bytes());
            n += 4;
        }
        let d = self.data;
        let skip = if self.strip_tag() { 16 } else { 12 };
        if n == 0 && skip == 12 || d.len() < 12 {
            return (d, (tags, 0), &[]);
        }
        (&d[..12], (tags, n), &d[skip..])
    }

    /// The vnet header as it must read on the wire: its offsets moved by
    /// the tags added and removed.
    #[inline]
    pub fn wire_vnet(&self) -> VnetHdr {
        let v = self.vnet.unwrap_or_default();
        let added = usize::from(self.insert_tag().is_some()) + usize::from(self.outer_tag().is_some());
        let removed = usize::from(self.strip_tag());
        match added.cmp(&removed) {
            std::cmp::Ordering::Equal => v,
            std::cmp::Ordering::Greater => (removed..added).fold(v, |v, _| v.shifted_by_tag()),
            std::cmp::Ordering::Less => v.unshifted_by_tag(),
        }
    }

    /// A copy of the frame as it goes on the wire (tags spliced in or out).
    pub fn to_wire_vec(&self) -> Vec<u8> {
        let (head, (tags, n), tail) = self.parts();
        let mut v = Vec::with_capacity(head.len() + n + tail.len());
        v.extend_from_slice(head);
        v.extend_from_slice(&tags[..n]);
        v.extend_from_slice(tail);
        v
    }
}

/// Empties `v` and hands back its allocation for frames of another lifetime,
/// so a reader can keep one vector across batches without allocating. No
/// frame outlives what it borrows (the vector is empty); the standard library
/// collects `into_iter().map(..)` in place when the layouts match.
pub fn recycle_rx<'b>(mut v: Vec<RxFrame<'_>>) -> Vec<RxFrame<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

/// [`recycle_rx`] for transmit batches.
pub fn recycle_tx<'b>(mut v: Vec<TxFrame<'_>>) -> Vec<TxFrame<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame with an 802.1Q tag at bytes 12..16 (VID 5), then IPv4.
    fn tagged() -> Vec<u8> {
        let mut f = vec![1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x81, 0x00, 0x00, 0x05, 0x08, 0x00];
        f.extend_from_slice(&[0xaa; 46]);
        f
    }

    #[test]
    fn tags_are_spliced_in_and_out_on_the_wire() {
        let t = tagged();
        let plain = TxFrame::new(&t, None, None);
        assert_eq!(plain.to_wire_vec(), t);
        assert_eq!(plain.wire_len(), t.len());
        // Stripped: the tag's four bytes are gone.
        let s = plain.with_strip_tag(true);
        let w = s.to_wire_vec();
        assert_eq!(w.len(), t.len() - 4);
        assert_eq!((&w[..12], &w[12..14]), (&t[..12], &[0x08, 0x00][..]));
        assert_eq!(s.wire_len(), w.len());
        // Re-tagged (strip + insert): VID 5 becomes VID 7 in place.
        let r = plain.with_strip_tag(true).with_insert_tag(Some((0x8100, 7)));
        assert_eq!(&r.to_wire_vec()[12..18], &[0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        // Untagged frame, offloaded 802.1ad tag back inside an 802.1Q one.
        let u: Vec<u8> = [&t[..12], &t[16..]].concat();
        let q = TxFrame::new(&u, None, Some((0x88a8, 3))).with_outer_tag(Some(10));
        assert_eq!(&q.to_wire_vec()[12..22], &[0x81, 0x00, 0x00, 0x0a, 0x88, 0xa8, 0x00, 0x03, 0x08, 0x00]);
        assert_eq!(q.wire_len(), u.len() + 8);
    }

    #[test]
    fn the_vnet_header_follows_the_tags() {
        let t = tagged();
        let v = VnetHdr { flags: VnetHdr::F_NEEDS_CSUM, csum_start: 38, hdr_len: 70, ..VnetHdr::default() };
        let f = TxFrame::new(&t, Some(v), None);
        assert_eq!(f.wire_vnet(), v);
        let s = f.with_strip_tag(true);
        assert_eq!((s.wire_vnet().csum_start, s.wire_vnet().hdr_len), (34, 66));
        let two = f.with_outer_tag(Some(1)).with_insert_tag(Some((0x88a8, 2)));
        assert_eq!(two.wire_vnet().csum_start, 46);
        let swap = f.with_strip_tag(true).with_insert_tag(Some((0x8100, 2)));
        assert_eq!(swap.wire_vnet(), v);
        assert_eq!(swap.insert_tag(), Some((0x8100, 2)));
        assert_eq!((swap.outer_tag(), swap.strip_tag()), (None, true));
        assert_eq!(std::mem::size_of::<TxFrame<'_>>(), 40, "see the type's doc");
    }
}
