-- hypod's SQL source over raw tracking tables: two views that turn raw exposures and orders
-- into the per-arm sums hypod reads (docs/sources.md#sql-warehouse explains them; hypod's tests run
-- this file as it is). Portable SQL: PostgreSQL and Redshift (no arrays, no FILTER, no
-- DISTINCT ON).
--
-- The raw tables it expects (yours will have more columns; rename to match):
--   exposures(experiment_id text, variation int, user_id text, first_exposed_at timestamptz)
--     variation 0 is the control; a user seen more than once counts in the arm first seen.
--   orders(user_id text, ordered_at timestamptz, revenue numeric(12,2))
--   experiment_meta(experiment_id text, name text, hypothesis text, moment text, lever text,
--     segment text, channel text, rendering text, region text, primary_kpi text,
--     signals text /* `|`-separated */, status text, idea_at date, started_at date,
--     ended_at date, decided_at date, decision text, owner text,
--     variation_names text /* `|`-separated, variation 0 first; optional */,
--     allocation text /* `|`-separated weights, variation 0 first; optional */)

-- One row per exposed user and experiment: the arm first seen, and the orders placed from the
-- first exposure to the end of the experiment's last day (still open while it runs).
create view hypod_user_outcomes as
with first_exposures as (
    select experiment_id, variation, user_id, first_exposed_at,
           row_number() over (
               partition by experiment_id, user_id
               order by first_exposed_at, variation
           ) as nth
    from exposures
)
select x.experiment_id,
       x.variation,
       x.user_id,
       count(o.user_id) as orders,
       coalesce(sum(o.revenue), 0) as revenue
from first_exposures x
join experiment_meta m on m.experiment_id = x.experiment_id
left join orders o
       on o.user_id = x.user_id
      and o.ordered_at >= x.first_exposed_at
      and (m.ended_at is null or o.ordered_at < m.ended_at + interval '1 day')
where x.nth = 1
group by x.experiment_id, x.variation, x.user_id;

-- One row per arm, the sums gbstats works from: visitors = distinct exposed users,
-- conversions = users with at least one order, orders, revenue = the sum of per-user revenue,
-- revenue_sq = the sum of per-user revenue squared. `variation` orders the arms (read it in
-- arms_query's ORDER BY, not as a column).
create view hypod_arms as
select u.experiment_id,
       u.variation,
       coalesce(
           nullif(split_part(coalesce(m.variation_names, ''), '|', u.variation + 1), ''),
           case when u.variation = 0 then 'control'
                else 'variation_' || cast(u.variation as varchar(10)) end
       ) as name,
       u.variation = 0 as control,
       count(*) as visitors,
       sum(case when u.orders > 0 then 1 else 0 end) as conversions,
       sum(u.orders) as orders,
       sum(u.revenue) as revenue,
       sum(u.revenue * u.revenue) as revenue_sq
from hypod_user_outcomes u
join experiment_meta m on m.experiment_id = u.experiment_id
group by u.experiment_id, u.variation, m.variation_names;

-- One row per experiment that has exposures, its columns named as the import format's fields.
create view hypod_experiments as
select m.experiment_id as id,
       m.name, m.hypothesis, m.moment, m.lever, m.segment, m.channel, m.rendering, m.region,
       m.primary_kpi, m.signals, m.status, m.idea_at, m.started_at, m.ended_at, m.decided_at,
       m.decision, m.owner, m.allocation
from experiment_meta m
where exists (select 1 from exposures x where x.experiment_id = m.experiment_id);
