//! The overview's chart: jobs finished per minute over the last hour, by how they ended,
//! drawn on the server as an inline SVG (stacked bars, a title on each minute for the
//! numbers), so the page needs no script and no chart library.

use chrono::{DateTime, Utc};
use maud::{html, Markup};
use shoal_common::ledger::{Record, Status};

/// Minutes the chart covers.
pub(super) const MINUTES: usize = 60;

const ENDINGS: [Status; 3] = [Status::Succeeded, Status::Failed, Status::Cancelled];

/// Jobs finished in each of the last [`MINUTES`] minutes, oldest first, from each record's
/// status and when it ended: per minute, the count for each of succeeded, failed and
/// cancelled.
pub(super) fn per_minute<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    now: DateTime<Utc>,
) -> Vec<[u32; 3]> {
    let endings = records
        .into_iter()
        .filter_map(|r| Some((r.status, r.finished_at.or(r.updated_at)?)));
    count_minutes(endings, now)
}

fn count_minutes(
    endings: impl IntoIterator<Item = (Status, DateTime<Utc>)>,
    now: DateTime<Utc>,
) -> Vec<[u32; 3]> {
    let mut minutes = vec![[0u32; 3]; MINUTES];
    for (status, at) in endings {
        let Some(ending) = ENDINGS.iter().position(|s| *s == status) else {
            continue;
        };
        let back = (now - at).num_seconds();
        if !(0..(MINUTES as i64 * 60)).contains(&back) {
            continue;
        }
        let minute = MINUTES - 1 - (back / 60) as usize;
        if let Some(count) = minutes.get_mut(minute).and_then(|m| m.get_mut(ending)) {
            *count += 1;
        }
    }
    minutes
}

const W: u32 = 12;
const H: u32 = 140;
const TOP: u32 = 16;

/// One minute's column: where it is, what its title says, and its bars (class, top, height).
struct Column {
    x: u32,
    title: String,
    bars: Vec<(&'static str, u32, u32)>,
}

fn columns(minutes: &[[u32; 3]], now: DateTime<Utc>, most: u32) -> Vec<Column> {
    let height = |count: u32| (f64::from(count) * f64::from(H) / f64::from(most)).round() as u32;
    minutes
        .iter()
        .enumerate()
        .map(|(i, counts)| {
            let start = now - chrono::Duration::minutes((MINUTES - i) as i64);
            let [succeeded, failed, cancelled] = *counts;
            let mut base = TOP + H;
            let mut bars = Vec::new();
            for (ending, count) in ENDINGS.iter().zip(counts) {
                if *count > 0 {
                    let h = height(*count).clamp(1, base - TOP);
                    base -= h;
                    bars.push((ending.as_str(), base, h));
                }
            }
            Column {
                x: i as u32 * W,
                title: format!(
                    "{}: {succeeded} succeeded, {failed} failed, {cancelled} cancelled",
                    start.format("%H:%M")
                ),
                bars,
            }
        })
        .collect()
}

/// The chart of `minutes` (from [`per_minute`]) ending at `now`.
pub(super) fn draw(minutes: &[[u32; 3]], now: DateTime<Utc>) -> Markup {
    let width = W * MINUTES as u32;
    let most = minutes
        .iter()
        .map(|m| m.iter().sum::<u32>())
        .max()
        .unwrap_or(0)
        .max(1);
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox={ "0 0 " (width + 40) " " (H + TOP + 24) }
            aria-label="Jobs finished per minute, last hour" {
            line.axis x1="0" y1=(TOP + H) x2=(width) y2=(TOP + H) {}
            text.tick x=(width + 4) y=(TOP + 4) { (most) }
            text.tick x=(width + 4) y=(TOP + H) { "0" }
            @for column in columns(minutes, now, most) {
                g.minute {
                    title { (column.title) }
                    rect.slot x=(column.x) y=(TOP) width=(W) height=(H) {}
                    @for (ending, y, h) in &column.bars {
                        rect class={ "bar s-" (ending) } x=(column.x + 1) y=(y) width=(W - 2) height=(h) {}
                    }
                }
            }
            text.tick x="0" y=(TOP + H + 16) { "-60 min" }
            text.tick x=(width / 2 - 20) y=(TOP + H + 16) { "-30 min" }
            text.tick x=(width - 24) y=(TOP + H + 16) { "now" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_job_lands_in_its_minute() {
        let now = Utc::now();
        let ago = |s: i64| now - chrono::Duration::seconds(s);
        let endings = vec![
            (Status::Succeeded, ago(10)),
            (Status::Succeeded, ago(50)),
            (Status::Failed, ago(70)),
            (Status::Cancelled, ago(59 * 60)),
            (Status::Succeeded, ago(61 * 60)),
            (Status::Running, now),
        ];
        let minutes = count_minutes(endings, now);
        assert_eq!(minutes.len(), MINUTES);
        assert_eq!(minutes[59], [2, 0, 0]);
        assert_eq!(minutes[58], [0, 1, 0]);
        assert_eq!(minutes[0], [0, 0, 1]);
        let total: u32 = minutes.iter().flatten().sum();
        assert_eq!(
            total, 4,
            "the one over an hour ago and the running one are left out"
        );
        let svg = draw(&minutes, now).into_string();
        assert_eq!(svg.matches("class=\"bar s-succeeded\"").count(), 1);
        assert_eq!(svg.matches("class=\"bar s-failed\"").count(), 1);
        assert!(svg.contains("2 succeeded, 0 failed, 0 cancelled"), "{svg}");
    }
}
