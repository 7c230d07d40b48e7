//! What `/api/billing/api-usage` and `/api/admin/api-usage` answer, as
//! domain values computed from rollup cells only (`http::report` renders
//! them as JSON).
//!
//! A range `[from, to)` is resolved to whole minutes and covered by the
//! fewest cells: day cells for whole UTC days, hour cells for whole hours,
//! minute cells for the rest (hour cells where minute cells are past their
//! retention).

use std::collections::BTreeMap;

use crate::rollup::{Agg, Buckets, Cell, EndpointAgg, Grain, Owner, PartyAgg};
use crate::store::{Store, StoreError};
use crate::usage::retention::MINUTE_ROLLUP_DAYS;

/// The most series points one answer holds.
pub(crate) const MAX_POINTS: i64 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub(crate) from_ms: i64,
    pub(crate) to_ms: i64,
}

fn floor_to(ms: i64, step: i64) -> i64 {
    ms.div_euclid(step) * step
}

fn ceil_to(ms: i64, step: i64) -> i64 {
    -floor_to(-ms, step)
}

impl Range {
    /// `[from, to)` resolved to whole minutes.
    pub fn minutes(from_ms: i64, to_ms: i64) -> Range {
        Range {
            from_ms: floor_to(from_ms, 60_000),
            to_ms: ceil_to(to_ms, 60_000),
        }
    }
}

/// Where a report reads its rollup cells: the store's, or cells made for
/// the report (`key_cells::KeyCells`: one API key's records).
pub trait Cells {
    fn rollups(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError>;
}

impl<S: Store + ?Sized> Cells for S {
    fn rollups(&self, owner: &Owner, span: Buckets) -> Result<Vec<(i64, Cell)>, StoreError> {
        Store::rollups(self, owner, span)
    }
}

/// Sums every record of `owner` in `range` (minute-aligned) from the fewest cells.
pub fn aggregate<C: Cells + ?Sized>(
    store: &C,
    owner: &Owner,
    range: Range,
    now_ms: i64,
) -> Result<Cell, StoreError> {
    let mut out = Cell::default();
    if range.from_ms >= range.to_ms {
        return Ok(out);
    }
    let day = Grain::Day.ms();
    let (d0, d1) = (ceil_to(range.from_ms, day), floor_to(range.to_ms, day));
    let mut parts = Vec::new();
    if d0 < d1 {
        add_cells(&mut out, store, owner, Grain::Day, d0, d1)?;
        parts.push((range.from_ms, d0));
        parts.push((d1, range.to_ms));
    } else {
        parts.push((range.from_ms, range.to_ms));
    }
    let minutes_kept_from = floor_to(now_ms, day) - MINUTE_ROLLUP_DAYS * day;
    let hour = Grain::Hour.ms();
    for (a, b) in parts {
        if a >= b {
            continue;
        }
        let (h0, h1) = (ceil_to(a, hour), floor_to(b, hour));
        let mut edges = Vec::new();
        if h0 < h1 {
            add_cells(&mut out, store, owner, Grain::Hour, h0, h1)?;
            edges.push((a, h0));
            edges.push((h1, b));
        } else {
            edges.push((a, b));
        }
        for (x, y) in edges {
            if x >= y {
                continue;
            }
            if x >= minutes_kept_from {
                add_cells(&mut out, store, owner, Grain::Minute, x, y)?;
            } else {
                add_cells(
                    &mut out,
                    store,
                    owner,
                    Grain::Hour,
                    floor_to(x, hour),
                    ceil_to(y, hour),
                )?;
            }
        }
    }
    Ok(out)
}

fn add_cells<C: Cells + ?Sized>(
    out: &mut Cell,
    store: &C,
    owner: &Owner,
    grain: Grain,
    from_ms: i64,
    to_ms: i64,
) -> Result<(), StoreError> {
    let span = Buckets::new(grain, grain.bucket(from_ms), grain.bucket(to_ms));
    let cells = store.rollups(owner, span)?;
    for (_, c) in &cells {
        out.merge(c);
    }
    Ok(())
}

/// A tenant's (or every tenant's) usage over a range.
#[derive(Debug, PartialEq)]
pub struct Usage {
    pub range: Range,
    /// The series' bucket.
    pub bucket: Grain,
    /// Every record in the range, summed.
    pub whole: Cell,
    /// Each bucket's start (ms) and sums, from the range's first bucket;
    /// `None` for a bucket without records.
    pub series: Vec<(i64, Option<Agg>)>,
    /// The range's cost by model, by day (by hour for two days or less).
    pub cost_by_model: CostByModel,
    /// The most requested endpoints: (endpoint, method, sums), by requests,
    /// then endpoint and method.
    pub endpoints: Vec<(String, String, EndpointAgg)>,
    /// The most requested models, by requests, then name.
    pub models: Vec<(String, Agg)>,
    pub(crate) top_users: Vec<(String, PartyAgg)>,
    pub(crate) top_bots: Vec<(String, PartyAgg)>,
    /// The API keys that made the most requests.
    pub(crate) top_keys: Vec<(String, PartyAgg)>,
}

/// The top `n` of `map` by `key` (descending, then by name).
fn ranked(
    map: &BTreeMap<String, PartyAgg>,
    n: usize,
    key: fn(&PartyAgg) -> f64,
) -> Vec<(String, PartyAgg)> {
    let mut rows: Vec<(&String, &PartyAgg)> = map.iter().collect();
    rows.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(b.0)));
    rows.into_iter()
        .take(n)
        .map(|(name, p)| (name.clone(), p.clone()))
        .collect()
}

fn by_requests(p: &PartyAgg) -> f64 {
    p.requests as f64
}

/// The usage of `owner` over `range`, the series by `bucket`, the top `top` of each ranking.
pub fn usage<C: Cells + ?Sized>(
    store: &C,
    owner: &Owner,
    range: Range,
    bucket: Grain,
    top: usize,
    now_ms: i64,
) -> Result<Usage, StoreError> {
    let whole = aggregate(store, owner, range, now_ms)?;
    let mut buckets = pieces(store, owner, range, bucket, now_ms)?;
    let cost_grain = if range.to_ms - range.from_ms > 2 * Grain::Day.ms() {
        Grain::Day
    } else {
        Grain::Hour
    };
    let cost_by_model = if cost_grain == bucket {
        CostByModel::of(&whole, &buckets, cost_grain, range, now_ms)
    } else {
        let cost_pieces = pieces(store, owner, range, cost_grain, now_ms)?;
        CostByModel::of(&whole, &cost_pieces, cost_grain, range, now_ms)
    };
    let series = buckets
        .iter_mut()
        .map(|(t, cell)| (*t, cell.take().map(|c| c.total)))
        .collect();
    // Ranked by reference; only the top ones are copied (a cell keeps up to
    // 1,000 endpoints of 16 methods, each with a latency histogram).
    let mut endpoints: Vec<(&String, &String, &EndpointAgg)> = whole
        .endpoints
        .iter()
        .flat_map(|(endpoint, methods)| {
            methods.iter().map(move |(method, e)| (endpoint, method, e))
        })
        .collect();
    endpoints.sort_by(|a, b| {
        b.2.agg
            .requests
            .cmp(&a.2.agg.requests)
            .then(a.0.cmp(b.0))
            .then(a.1.cmp(b.1))
    });
    let endpoints: Vec<(String, String, EndpointAgg)> = endpoints
        .into_iter()
        .take(top)
        .map(|(endpoint, method, e)| (endpoint.clone(), method.clone(), e.clone()))
        .collect();
    let mut models: Vec<(&String, &Agg)> = whole.models.iter().collect();
    models.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(b.0)));
    let models: Vec<(String, Agg)> = models
        .into_iter()
        .take(top)
        .map(|(m, a)| (m.clone(), a.clone()))
        .collect();
    Ok(Usage {
        range,
        bucket,
        top_users: ranked(&whole.users, top, by_requests),
        top_bots: ranked(&whole.bots, top, by_requests),
        top_keys: ranked(&whole.ext6.keys, top, by_requests),
        whole,
        series,
        cost_by_model,
        endpoints,
        models,
    })
}

/// Each `grain` bucket of `range` from its first (which may start before
/// it), with every record of the bucket inside the range summed; `None`
/// for a whole bucket without records. Whole buckets come from one read;
/// the partial ones at the edges are aggregated from finer cells.
fn pieces<C: Cells + ?Sized>(
    store: &C,
    owner: &Owner,
    range: Range,
    grain: Grain,
    now_ms: i64,
) -> Result<Vec<(i64, Option<Cell>)>, StoreError> {
    let step = grain.ms();
    let mut whole_cells: BTreeMap<i64, Cell> = store
        .rollups(
            owner,
            Buckets::new(
                grain,
                grain.bucket(ceil_to(range.from_ms, step)),
                grain.bucket(floor_to(range.to_ms, step)),
            ),
        )?
        .into_iter()
        .collect();
    let mut out = Vec::new();
    let mut t = floor_to(range.from_ms, step);
    while t < range.to_ms {
        let piece = Range {
            from_ms: t.max(range.from_ms),
            to_ms: (t + step).min(range.to_ms),
        };
        let cell = if piece.from_ms == t && piece.to_ms == t + step {
            whole_cells.remove(&grain.bucket(t))
        } else {
            Some(aggregate(store, owner, piece, now_ms)?)
        };
        out.push((t, cell));
        t += step;
    }
    Ok(out)
}

/// How many models the cost chart names; the rest are summed as [`OTHER_MODELS`].
pub(crate) const NAMED_MODELS: usize = 5;

/// The cost of the models after the [`NAMED_MODELS`] costliest, and of
/// records that name no model.
pub(crate) const OTHER_MODELS: &str = "other";

/// The range's cost by model, bucket by bucket: a stacked bar each.
#[derive(Debug, PartialEq)]
pub struct CostByModel {
    pub bucket: Grain,
    /// The costliest models of the range, then [`OTHER_MODELS`] when
    /// anything else cost something.
    pub models: Vec<String>,
    pub points: Vec<CostPoint>,
}

#[derive(Debug, PartialEq)]
pub struct CostPoint {
    /// The bucket's start (ms).
    pub t: i64,
    /// The range starts after the bucket does, ends before it does, or
    /// the bucket is still filling.
    pub partial: bool,
    pub cost_usd: f64,
    /// In the order of [`CostByModel::models`].
    pub by_model: Vec<f64>,
}

impl CostByModel {
    fn of(
        whole: &Cell,
        pieces: &[(i64, Option<Cell>)],
        grain: Grain,
        range: Range,
        now_ms: i64,
    ) -> CostByModel {
        let mut costly: Vec<(&String, f64)> = whole
            .models
            .iter()
            .filter(|(_, a)| a.cost_usd > 0.0)
            .map(|(m, a)| (m, a.cost_usd))
            .collect();
        costly.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let mut models: Vec<String> = costly
            .iter()
            .take(NAMED_MODELS)
            .map(|(m, _)| (*m).clone())
            .collect();
        let named: f64 = costly.iter().take(NAMED_MODELS).map(|(_, c)| c).sum();
        // A thousandth of a cent: what rounding leaves is not "other".
        let rest = whole.total.cost_usd - named > 1e-5;
        if rest {
            models.push(OTHER_MODELS.to_owned());
        }
        let step = grain.ms();
        let points = pieces
            .iter()
            .map(|(t, cell)| {
                let cost_usd = cell.as_ref().map_or(0.0, |c| c.total.cost_usd);
                let mut by_model: Vec<f64> = models
                    .iter()
                    .take(models.len() - usize::from(rest))
                    .map(|m| {
                        cell.as_ref()
                            .and_then(|c| c.models.get(m))
                            .map_or(0.0, |a| a.cost_usd)
                    })
                    .collect();
                if rest {
                    let named: f64 = by_model.iter().sum();
                    by_model.push((cost_usd - named).max(0.0));
                }
                CostPoint {
                    t: *t,
                    partial: *t < range.from_ms || t + step > range.to_ms || t + step > now_ms,
                    cost_usd,
                    by_model,
                }
            })
            .collect();
        CostByModel {
            bucket: grain,
            models,
            points,
        }
    }
}

/// Tenants ranked three ways, for the operators' view.
#[derive(Debug, PartialEq)]
pub(crate) struct TopTenants {
    pub(crate) by_requests: Vec<(String, PartyAgg)>,
    pub(crate) by_tokens: Vec<(String, PartyAgg)>,
    pub(crate) by_cost: Vec<(String, PartyAgg)>,
}

pub(crate) fn top_tenants(all: &Cell, n: usize) -> TopTenants {
    TopTenants {
        by_requests: ranked(&all.tenants, n, by_requests),
        by_tokens: ranked(&all.tenants, n, |p| p.tokens as f64),
        by_cost: ranked(&all.tenants, n, |p| p.cost_usd),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(costs: &[(&str, f64)], unnamed: f64) -> Cell {
        let mut c = Cell::default();
        for (m, usd) in costs {
            c.models.insert(
                (*m).to_owned(),
                Agg {
                    cost_usd: *usd,
                    ..Agg::default()
                },
            );
            c.total.cost_usd += usd;
        }
        c.total.cost_usd += unnamed;
        c
    }

    #[test]
    fn the_five_costliest_models_are_named_and_the_rest_is_other() {
        let hour = Grain::Hour.ms();
        // Seven models over two hours and a record naming none: m1 costs
        // the most, m6 and m7 the least.
        let a = cell(
            &[("m1", 6.0), ("m2", 5.0), ("m6", 0.5), ("free", 0.0)],
            0.25,
        );
        let b = cell(&[("m3", 4.0), ("m4", 3.0), ("m5", 2.0), ("m7", 0.1)], 0.0);
        let mut whole = Cell::default();
        whole.merge(&a);
        whole.merge(&b);
        let range = Range::minutes(30 * 60_000, 2 * hour);
        let c = CostByModel::of(
            &whole,
            &[(0, Some(a)), (hour, Some(b))],
            Grain::Hour,
            range,
            10 * hour,
        );
        assert_eq!(c.models, ["m1", "m2", "m3", "m4", "m5", "other"]);
        assert_eq!(c.points[0].by_model, [6.0, 5.0, 0.0, 0.0, 0.0, 0.75]);
        assert!((c.points[1].by_model[5] - 0.1).abs() < 1e-9);
        // The range starts half an hour into the first bucket.
        assert!(c.points[0].partial && !c.points[1].partial);
        // Still filling: the bucket that ends after now.
        let c = CostByModel::of(&whole, &[(hour, None)], Grain::Hour, range, hour + 1);
        assert!(c.points[0].partial && c.points[0].cost_usd == 0.0);
        // Nothing beyond the named ones: no "other".
        let only = cell(&[("m1", 1.0)], 0.0);
        let c = CostByModel::of(
            &only,
            &[(hour, Some(only.clone()))],
            Grain::Hour,
            range,
            10 * hour,
        );
        assert_eq!(c.models, ["m1"]);
        assert_eq!(c.points[0].by_model, [1.0]);
    }
}
