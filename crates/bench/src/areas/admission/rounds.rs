//! The saturation rounds of one review (pure): what the floor and the webhook did in each round,
//! and how the table shows it.

use crate::stats::median;

/// Whether round `round` (from 0) loads the floor before the webhook; the order flips every
/// round so neither always goes first.
pub fn floor_first(round: usize) -> bool {
    round.is_multiple_of(2)
}

/// One review's saturation runs (req/s), one per round, the floor's and the webhook's of a round
/// at the same index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rounds {
    pub floor: Vec<f64>,
    /// Empty without a webhook (the smoke plan).
    pub webhook: Vec<f64>,
}

impl Rounds {
    /// webhook / floor of each round that measured both.
    pub fn ratios(&self) -> Vec<f64> {
        self.floor
            .iter()
            .zip(&self.webhook)
            .map(|(f, w)| w / f)
            .collect()
    }

    /// The table's cells: the floor's median req/s, the webhook's, and webhook / floor as the
    /// median of the per-round ratios with their range (`58 % (51–63 %, 5 rounds)`); `—` where
    /// there is nothing to show.
    pub fn cells(&self) -> [String; 3] {
        let rps = |v: &[f64]| median(v).map_or("—".to_owned(), |m| format!("{m:.0}"));
        let ratios = self.ratios();
        let pct = |r: f64| format!("{:.0}", r * 100.0);
        let ratio = match (median(&ratios), ratios.len()) {
            (None, _) => "—".to_owned(),
            (Some(m), 1) => format!("{} % (1 round)", pct(m)),
            (Some(m), n) => {
                let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
                let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{} % ({}–{} %, {n} rounds)", pct(m), pct(min), pct(max))
            }
        };
        [rps(&self.floor), rps(&self.webhook), ratio]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_the_median_of_the_rounds_ratios_with_their_range() {
        // Ratios by round: 52, 58, 51, 55, 64 %; the medians of the columns are taken on their
        // own (50000 and 28050), so the ratio column is not their quotient.
        let r = Rounds {
            floor: vec![50000.0, 52000.0, 48000.0, 51000.0, 49000.0],
            webhook: vec![26000.0, 30160.0, 24480.0, 28050.0, 31360.0],
        };
        assert_eq!(
            r.cells(),
            ["50000", "28050", "55 % (51–64 %, 5 rounds)"].map(String::from)
        );
    }

    #[test]
    fn two_rounds_take_the_mean_of_both_and_one_round_has_no_range() {
        let two = Rounds {
            floor: vec![40000.0, 60000.0],
            webhook: vec![20000.0, 36000.0],
        };
        assert_eq!(
            two.cells(),
            ["50000", "28000", "55 % (50–60 %, 2 rounds)"].map(String::from)
        );
        let one = Rounds {
            floor: vec![51368.0],
            webhook: vec![26667.0],
        };
        assert_eq!(
            one.cells(),
            ["51368", "26667", "52 % (1 round)"].map(String::from)
        );
    }

    #[test]
    fn the_floor_alone_shows_dashes_for_the_webhook() {
        let smoke = Rounds {
            floor: vec![51368.4],
            webhook: vec![],
        };
        assert_eq!(smoke.cells(), ["51368", "—", "—"].map(String::from));
    }

    #[test]
    fn the_order_flips_every_round() {
        let order: Vec<bool> = (0..4).map(floor_first).collect();
        assert_eq!(order, [true, false, true, false]);
    }
}
