//! The server's stage breakdown of a run: how long submits spent in each
//! stage (queue, execute, append, sync, respond: `tally_stage_seconds`),
//! from the metrics page read before and after the run, so a stall can be
//! attributed to a stage.

use std::collections::BTreeMap;

/// One stage's figures over the run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Stage {
    pub stage: String,
    /// Submits observed in the stage during the run.
    pub count: u64,
    pub mean_us: f64,
    /// The upper bound of the histogram bucket holding the 99th percentile
    /// (buckets double from 20 µs: an over-estimate by up to 2×).
    pub p99_us: f64,
    /// The longest seen since the server started.
    pub max_us: Option<f64>,
}

/// The stage histograms on one metrics page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// Per stage: (upper bound in s, cumulative count) in order of bound.
    buckets: BTreeMap<String, Vec<(f64, u64)>>,
    sums: BTreeMap<String, f64>,
    counts: BTreeMap<String, u64>,
    maxes: BTreeMap<String, f64>,
}

/// The value of `key="..."` in a label set.
fn label<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("{key}=\""))? + key.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

pub fn parse(text: &str) -> Page {
    let mut p = Page::default();
    for (name, value) in crate::sample::metric_lines(text) {
        let Some(stage) = label(name, "stage") else {
            continue;
        };
        let stage = stage.to_string();
        if name.starts_with("tally_stage_seconds_bucket{") {
            let le = match label(name, "le") {
                Some("+Inf") => f64::INFINITY,
                Some(x) => match x.parse() {
                    Ok(v) => v,
                    Err(_) => continue,
                },
                None => continue,
            };
            p.buckets.entry(stage).or_default().push((le, value as u64));
        } else if name.starts_with("tally_stage_seconds_sum{") {
            p.sums.insert(stage, value);
        } else if name.starts_with("tally_stage_seconds_count{") {
            p.counts.insert(stage, value as u64);
        } else if name.starts_with("tally_stage_max_seconds{") {
            p.maxes.insert(stage, value);
        }
    }
    for b in p.buckets.values_mut() {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
    }
    p
}

/// The stages of the run between two pages (`before` may be empty: a
/// server started for the run).
pub fn between(before: &Page, after: &Page) -> Vec<Stage> {
    let empty = Page::default();
    tally_net::metrics::STAGES
        .iter()
        .filter_map(|stage| {
            // A server restarted in between (its counts went down) is read
            // from the later page alone.
            let before = match (before.counts.get(*stage), after.counts.get(*stage)) {
                (Some(b), Some(a)) if b > a => &empty,
                _ => before,
            };
            let count = after
                .counts
                .get(*stage)?
                .saturating_sub(*before.counts.get(*stage).unwrap_or(&0));
            let sum = (after.sums.get(*stage)? - before.sums.get(*stage).unwrap_or(&0.0)).max(0.0);
            let prior: BTreeMap<u64, u64> = before
                .buckets
                .get(*stage)
                .into_iter()
                .flatten()
                .map(|(le, n)| (le.to_bits(), *n))
                .collect();
            let target = (count as f64 * 0.99).ceil() as u64;
            let p99 = if count == 0 {
                0.0
            } else {
                after
                    .buckets
                    .get(*stage)?
                    .iter()
                    .find(|(le, n)| {
                        n.saturating_sub(*prior.get(&le.to_bits()).unwrap_or(&0)) >= target
                    })
                    .map_or(f64::INFINITY, |(le, _)| *le)
            };
            Some(Stage {
                stage: stage.to_string(),
                count,
                mean_us: if count > 0 {
                    sum / count as f64 * 1e6
                } else {
                    0.0
                },
                p99_us: p99 * 1e6,
                max_us: after.maxes.get(*stage).map(|m| m * 1e6),
            })
        })
        .collect()
}

/// The breakdown's lines for the table.
pub fn table(stages: &[Stage]) -> String {
    let mut s = String::from("\nserver stages (mean / p99 bucket / max since start, µs):");
    for st in stages {
        s.push_str(&format!(
            " {} {:.0} / {:.0} / {}",
            st.stage,
            st.mean_us,
            st.p99_us,
            st.max_us.map_or("?".into(), |m| format!("{m:.0}"))
        ));
        s.push(';');
    }
    s.pop();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_is_the_difference_of_two_pages() {
        let page = |n: u64, sum: f64| {
            format!(
                "tally_stage_seconds_sum{{stage=\"sync\"}} {sum}\n\
                 tally_stage_seconds_count{{stage=\"sync\"}} {n}\n\
                 tally_stage_seconds_bucket{{le=\"0.001\",stage=\"sync\"}} {}\n\
                 tally_stage_seconds_bucket{{le=\"0.002\",stage=\"sync\"}} {}\n\
                 tally_stage_seconds_bucket{{le=\"+Inf\",stage=\"sync\"}} {n}\n\
                 tally_stage_max_seconds{{stage=\"sync\"}} 0.004\n",
                n / 2,
                n * 99 / 100
            )
        };
        let before = parse(&page(100, 0.1));
        let after = parse(&page(300, 0.4));
        let s = between(&before, &after);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].stage, "sync");
        assert_eq!(s[0].count, 200);
        assert!((s[0].mean_us - 1500.0).abs() < 1e-6, "{}", s[0].mean_us);
        // 198 of the run's 200 are under 2 ms.
        assert_eq!(s[0].p99_us, 2000.0);
        assert_eq!(s[0].max_us, Some(4000.0));
        assert!(between(&Page::default(), &Page::default()).is_empty());
        // Nothing went through: no p99; a restarted server: the later page.
        let idle = between(&after, &after);
        assert_eq!((idle[0].count, idle[0].p99_us), (0, 0.0));
        let restarted = between(&after, &before);
        assert_eq!(restarted[0].count, 100);
    }
}
