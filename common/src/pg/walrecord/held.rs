//! The bytes of one record as the decoder reads them ([`Held`]): all of them, or — for a
//! record longer than [`MAX_OPEN_RECORD`] streaming past — its first bytes and the few
//! small ranges the decoder asked for further on ([`Keeper`]), so that a commit with a
//! million subtransactions is decoded without being held.
//!
//! The decoder only ever reads forward (block headers, then the main data at the end, then
//! the fields of the main data in order), so a read of bytes not held yet names the next
//! range the stream must keep ([`Held::missed`]); it asks again once that range has passed.

use std::cell::Cell;

use super::{Event, MAX_OPEN_RECORD};

/// How many ranges past its first [`MAX_OPEN_RECORD`] bytes the decoder may ask of one
/// record: a commit reads at most four counts and a two-phase xid there; only a record
/// built to be hostile (thousands of block references) asks for more, and is not decoded.
const MAX_WINDOWS: usize = 16;

/// A record's bytes, whole or in part, with checked reads.
pub(crate) struct Held<'a> {
    len: usize,
    prefix: &'a [u8],
    windows: &'a [(usize, Vec<u8>)],
    missed: Cell<Option<(usize, usize)>>,
}

impl<'a> Held<'a> {
    /// A whole record.
    pub(crate) fn whole(record: &'a [u8]) -> Self {
        Held::sparse(record.len(), record, &[])
    }

    /// A record of `len` bytes of which the first `prefix.len()` and `windows` (offset,
    /// bytes) are held.
    pub(crate) fn sparse(len: usize, prefix: &'a [u8], windows: &'a [(usize, Vec<u8>)]) -> Self {
        Held {
            len,
            prefix,
            windows,
            missed: Cell::new(None),
        }
    }

    /// The `n` bytes at `at`: `None` past the record's end, or (noted in [`Held::missed`])
    /// when they are not held.
    pub(crate) fn get(&self, at: usize, n: usize) -> Option<&'a [u8]> {
        let end = at.checked_add(n)?;
        if end > self.len {
            return None;
        }
        if let Some(b) = self.prefix.get(at..end) {
            return Some(b);
        }
        let window = self.windows.iter().find_map(|(w, b)| {
            let from = at.checked_sub(*w)?;
            b.get(from..from.checked_add(n)?)
        });
        if window.is_none() && self.missed.get().is_none() {
            self.missed.set(Some((at, n)));
        }
        window
    }

    /// The first range read but not held, if any: decoding stopped there, not for good.
    pub(crate) fn missed(&self) -> Option<(usize, usize)> {
        self.missed.get()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A cursor over the `n` bytes at `at`; `None` when they run past the record.
    pub(crate) fn cursor(&'a self, at: usize, n: usize) -> Option<Cursor<'a>> {
        let end = at.checked_add(n).filter(|&e| e <= self.len)?;
        Some(Cursor {
            held: self,
            pos: at,
            end,
        })
    }
}

/// Checked little-endian reads over a range of a [`Held`] record: every read past the range
/// (or of bytes not held) is `None`, never a panic.
#[derive(Clone, Copy)]
pub(crate) struct Cursor<'a> {
    held: &'a Held<'a>,
    pos: usize,
    end: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn remaining(&self) -> usize {
        self.end.saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.remaining() {
            return None;
        }
        let b = self.held.get(self.pos, n)?;
        self.pos += n;
        Some(b)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    /// A cursor over what follows `n` bytes from here, up to the end of this one.
    pub(crate) fn rest_after(&self, n: usize) -> Option<Cursor<'a>> {
        let pos = self.pos.checked_add(n).filter(|&p| p <= self.end)?;
        Some(Cursor { pos, ..*self })
    }

    pub(crate) fn skip(&mut self, n: usize) -> Option<()> {
        if n > self.remaining() {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// Skips an `int` count followed by that many items of `item` bytes.
    pub(crate) fn skip_array(&mut self, item: usize) -> Option<()> {
        let n = usize::try_from(self.i32()?).ok()?;
        self.skip(n.checked_mul(item)?)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_le_bytes)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
}

/// What the reader keeps of the wanted record streaming past, for the decoder.
#[derive(Default)]
pub(crate) struct Keeper {
    /// The record's first bytes, up to [`MAX_OPEN_RECORD`] (all of a short record).
    pub(crate) first: Vec<u8>,
    /// Ranges (offset, bytes) further on that the decoder asked for.
    windows: Vec<(usize, Vec<u8>)>,
    state: Decoding,
}

#[derive(Default)]
enum Decoding {
    /// Keeping the first bytes.
    #[default]
    First,
    /// Keeping `n` bytes at record offset `at` for the decoder (`buf` so far).
    Window { at: usize, n: usize, buf: Vec<u8> },
    /// Decoded, or given up: the event to hand over once the CRC checks out.
    Done(Option<Event>),
}

/// The decoder of one record, given what is held of it.
pub(crate) type Decode<'d> = &'d dyn Fn(&Held) -> Option<Event>;

impl Keeper {
    /// A new wanted record, whose header is `header`.
    pub(crate) fn start(&mut self, header: &[u8]) {
        self.first.clear();
        self.first.extend_from_slice(header);
        self.windows.clear();
        self.state = Decoding::First;
    }

    /// Keeps what `decode` needs of the bytes `b` at offset `at` of the record of `tot`
    /// bytes: all of a short record; of a longer one its first [`MAX_OPEN_RECORD`] bytes,
    /// then the ranges the decoder asks for as they stream past.
    pub(crate) fn keep(&mut self, decode: Decode, tot: usize, mut at: usize, mut b: &[u8]) {
        if matches!(self.state, Decoding::First) {
            let k = MAX_OPEN_RECORD
                .saturating_sub(self.first.len())
                .min(b.len());
            self.first.extend_from_slice(&b[..k]);
            (at, b) = (at + k, &b[k..]);
            if self.first.len() < MAX_OPEN_RECORD || tot == self.first.len() {
                return;
            }
            self.state = self.try_decode(decode, tot);
        }
        while let Decoding::Window { at: w, n, buf } = &mut self.state {
            let need = *w + buf.len();
            if need < at {
                // Behind the stream: the decoder reads forward, so it cannot have asked.
                self.state = Decoding::Done(None);
                return;
            }
            let skip = need - at;
            if skip >= b.len() {
                return;
            }
            let k = (*n - buf.len()).min(b.len() - skip);
            buf.extend_from_slice(&b[skip..skip + k]);
            (at, b) = (need + k, &b[skip + k..]);
            if buf.len() < *n {
                return;
            }
            let window = (*w, std::mem::take(buf));
            self.windows.push(window);
            self.state = self.try_decode(decode, tot);
        }
    }

    /// Decodes the long record of `tot` bytes from what is kept, or names the next range
    /// the decoder needs.
    fn try_decode(&self, decode: Decode, tot: usize) -> Decoding {
        let held = Held::sparse(tot, &self.first, &self.windows);
        let event = decode(&held);
        match held.missed() {
            None => Decoding::Done(event),
            Some(_) if self.windows.len() >= MAX_WINDOWS => Decoding::Done(None),
            Some((at, n)) => Decoding::Window {
                at,
                n,
                // A read may begin in the first bytes.
                buf: self
                    .first
                    .get(at..self.first.len().min(at.saturating_add(n)))
                    .unwrap_or_default()
                    .to_vec(),
            },
        }
    }

    /// The record's event, once all its bytes went past.
    pub(crate) fn event(&mut self, decode: Decode) -> Option<Event> {
        match std::mem::take(&mut self.state) {
            Decoding::First => decode(&Held::whole(&self.first)),
            Decoding::Done(e) => e,
            // Every range the decoder asks for lies inside the record.
            Decoding::Window { .. } => None,
        }
    }

    /// How many bytes it holds.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        let window = match &self.state {
            Decoding::Window { buf, .. } => buf.capacity(),
            _ => 0,
        };
        let windows: usize = self.windows.iter().map(|(_, b)| b.capacity() + 16).sum();
        self.first.capacity() + window + windows
    }
}
