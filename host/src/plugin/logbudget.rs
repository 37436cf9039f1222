//! Rate limit of `host.log`: a plugin that logs in a loop must not flood the
//! proxy's log (or its disk) in the time its deadline allows. Each plugin
//! gets a token bucket shared by all its instances; lines over the budget
//! are dropped and counted (`bbproxy_plugin_log_lines_dropped_total`), and
//! long lines are cut.

use std::sync::Mutex;

use crate::clock;

/// Lines a plugin may log in a burst.
pub const BURST: u32 = 100;
/// Lines per second a plugin may log in the long run.
pub const PER_SECOND: u32 = 100;
/// Longest message kept, in bytes; the rest is cut.
pub const MAX_LINE_BYTES: usize = 1024;

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    refilled_ms: u64,
}

/// The log budget of one plugin.
#[derive(Debug)]
pub struct LogBudget {
    bucket: Mutex<Bucket>,
}

impl Default for LogBudget {
    fn default() -> Self {
        Self {
            bucket: Mutex::new(Bucket {
                tokens: BURST,
                refilled_ms: clock::monotonic_ms(),
            }),
        }
    }
}

impl LogBudget {
    /// Whether one more line may be logged at monotonic time `now_ms`.
    pub fn take(&self, now_ms: u64) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = now_ms.saturating_sub(b.refilled_ms);
        let earned = elapsed.saturating_mul(u64::from(PER_SECOND)) / 1000;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            b.tokens = b.tokens.saturating_add(earned).min(BURST);
            // Keep the remainder: advance only by the time the tokens cost.
            b.refilled_ms += u64::from(earned) * 1000 / u64::from(PER_SECOND);
        }
        if b.tokens == 0 {
            return false;
        }
        b.tokens -= 1;
        true
    }
}

/// `message` cut to [`MAX_LINE_BYTES`] on a character boundary.
pub fn truncate(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_LINE_BYTES {
        return message.into();
    }
    let mut end = MAX_LINE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes cut)",
        &message[..end],
        message.len() - end
    )
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let b = LogBudget::default();
        let t = clock::monotonic_ms();
        assert_eq!((0..BURST * 2).filter(|_| b.take(t)).count(), BURST as usize);
        // 50 ms later: 5 more lines.
        assert_eq!((0..100).filter(|_| b.take(t + 50)).count(), 5);
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_LINE_BYTES);
        let cut = truncate(&long);
        assert!(cut.len() < long.len());
        assert!(cut.ends_with("more bytes cut)"));
        assert_eq!(truncate("short"), "short");
    }
}
