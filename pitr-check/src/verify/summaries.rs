//! A segment's WAL summary checked against the summary of its records, computed while
//! verify reads the segment anyway.

use pitrkit::error::Result;
use pitrkit::pg::wal::WalFileName;
use pitrkit::pg::walrecord::Summarizer;
use pitrkit::repo::summary::Summaries;

use super::Problem;

/// Feeds what passes through it to a summarizer.
pub(super) struct Summing(pub(super) Summarizer);

impl std::io::Write for Summing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.feed(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Compares the stored summary of `name` with the one its bytes give.
pub(super) fn check_summary(
    summaries: &Summaries,
    name: &WalFileName,
    computed: Summarizer,
) -> Result<Option<Problem>> {
    let key = pitrkit::repo::layout::summary(name).to_string();
    let Ok(computed) = computed.finish(&name.to_string()) else {
        return Ok(None); // the segment's own check reports what is wrong with it
    };
    Ok(match summaries.read(name)? {
        Some(stored) if stored == computed => None,
        Some(_) => Some(Problem {
            key,
            problem: "corrupt".into(),
            detail: format!(
                "does not describe {name} as its records do: delete it, and pitr-check index \
                 writes it again"
            ),
            breaks: vec![],
        }),
        None => Some(Problem {
            key,
            problem: "corrupt".into(),
            detail: summaries
                .unreadable()
                .into_iter()
                .find(|(k, _)| k.as_str() == pitrkit::repo::layout::summary(name).as_str())
                .map_or_else(|| "can't be read".into(), |(_, why)| why),
            breaks: vec![],
        }),
    })
}
