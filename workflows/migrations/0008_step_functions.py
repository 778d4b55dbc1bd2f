"""The common case of a step's two transactions as PostgreSQL functions, one round trip each.

`workflows/services/step_functions.py` calls them and says when; `docs/performance.md` says why.
Each function takes the team, run and step row locks in the one order, checks that the step is the
plain case it handles, and otherwise declines having written nothing, so that the caller takes the
general path in Python. The rows they insert are built in Python from the models, as JSON; the
functions fill in only what the locked rows decide (the spend after the charge, the counters).
"""

from django.db import migrations

# Keep each value here equal to its choice in workflows/models.py.
FUNCTIONS = r"""
CREATE FUNCTION workflows_period_bounds(period text, moment timestamptz, OUT first_day date, OUT end_day date)
LANGUAGE sql STABLE AS $$
    -- As workflows/services/periods.py: UTC days from midnight, weeks from Monday, months from the 1st.
    SELECT start::date, (start + CASE period WHEN 'day' THEN interval '1 day'
                                             WHEN 'week' THEN interval '1 week'
                                             ELSE interval '1 month' END)::date
    FROM (SELECT date_trunc(CASE period WHEN 'day' THEN 'day' WHEN 'week' THEN 'week' ELSE 'month' END,
                            moment AT TIME ZONE 'UTC') AS start) AS period_start
$$;

CREATE FUNCTION workflows_step_admit(
    step_id bigint, estimate numeric, step_model text, step_worker text, basis_checkpoint_id bigint, at timestamptz
) RETURNS integer
LANGUAGE plpgsql AS $$
-- Admit a pending plain step with a reservation when the run and its team have room for it under
-- every limit, whatever the budget modes. The attempt's number, or NULL for the general path.
DECLARE
    s workflows_step%ROWTYPE;
    r workflows_run%ROWTYPE;
    t workflows_team%ROWTYPE;
    bounds record;
    period_spent numeric;
BEGIN
    -- A step's run and a run's team never change: they can be looked up before the locks.
    SELECT * INTO t FROM workflows_team
    WHERE id = (SELECT team_id FROM workflows_run
                WHERE id = (SELECT run_id FROM workflows_step AS x WHERE x.id = step_id))
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO r FROM workflows_run WHERE team_id = t.id
        AND id = (SELECT run_id FROM workflows_step AS x WHERE x.id = step_id) FOR NO KEY UPDATE;
    SELECT * INTO s FROM workflows_step AS x WHERE x.id = step_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- The caller's clock, moved on by the wait for the locks: the general path reads it after them.
    at := at + (clock_timestamp() - statement_timestamp());
    IF s.status <> 'pending' OR s."group" <> '' OR r.status NOT IN ('queued', 'running')
        OR (SELECT max(id) FROM workflows_checkpoint WHERE run_id = r.id) IS DISTINCT FROM basis_checkpoint_id
    THEN
        RETURN NULL;
    END IF;
    IF r.timeout_seconds IS NOT NULL AND r.active_time + COALESCE(at - r.active_since, interval '0')
                                         > make_interval(secs => r.timeout_seconds)
        OR r.iterations >= r.max_iterations
        OR r.budget_usd IS NOT NULL AND r.spent_usd + r.reserved_usd + estimate > r.budget_usd
    THEN
        RETURN NULL;
    END IF;
    IF t.period_budget_usd IS NOT NULL THEN
        bounds := workflows_period_bounds(t.period, at);
        SELECT COALESCE(sum(spent_usd), 0) INTO period_spent FROM workflows_teamdailyspend
        WHERE team_id = t.id AND day >= bounds.first_day AND day < bounds.end_day;
        IF period_spent + t.reserved_usd + estimate > t.period_budget_usd THEN
            RETURN NULL;
        END IF;
    END IF;

    UPDATE workflows_run SET reserved_usd = round(reserved_usd + estimate, 6), status = 'running',
                             current_agent = s.agent, updated_at = at
    WHERE id = r.id;
    UPDATE workflows_team SET reserved_usd = round(reserved_usd + estimate, 6) WHERE id = t.id;
    UPDATE workflows_step AS x SET status = 'running', attempts = x.attempts + 1, model = step_model,
                                   estimate_usd = estimate, reserved_usd = estimate,
                                   worker = step_worker, started_at = at
    WHERE x.id = step_id;
    RETURN s.attempts + 1;
END
$$;

CREATE FUNCTION workflows_step_settle(
    step_id bigint, attempt integer, basis_checkpoint_id bigint, at timestamptz, step_output jsonb,
    ledger_entry jsonb, events jsonb, next_step jsonb, checkpoint jsonb, run_output jsonb,
    OUT settled boolean, OUT next_step_id bigint
)
LANGUAGE plpgsql AS $$
-- Settle the attempt that owns a plain step whose routes lead to another plain step, or to the end
-- of the run (`next_step` NULL): the ledger entry, the counters, the step, the events, the next step
-- or the run's completion, and the checkpoint. Not settled, with nothing written, when the attempt
-- no longer owns its step, the run is not active, another checkpoint came, or the spend reaches an
-- alert threshold not yet recorded: the general path settles it then.
DECLARE
    s workflows_step%ROWTYPE;
    r workflows_run%ROWTYPE;
    t workflows_team%ROWTYPE;
    bounds record;
    cost numeric := (ledger_entry->>'cost_usd')::numeric;
    spent numeric;
    period_spent numeric;
    active interval;
    ending boolean := next_step IS NULL;
BEGIN
    settled := false;
    SELECT * INTO t FROM workflows_team
    WHERE id = (SELECT team_id FROM workflows_run
                WHERE id = (SELECT run_id FROM workflows_step AS x WHERE x.id = step_id))
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO r FROM workflows_run WHERE team_id = t.id
        AND id = (SELECT run_id FROM workflows_step AS x WHERE x.id = step_id) FOR NO KEY UPDATE;
    SELECT * INTO s FROM workflows_step AS x WHERE x.id = step_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- The caller's clock, moved on by the wait for the locks; every row written is stamped with it.
    at := at + (clock_timestamp() - statement_timestamp());
    IF s.status <> 'running' OR s.attempts <> attempt OR s."group" <> '' OR r.status NOT IN ('queued', 'running')
        OR (SELECT max(id) FROM workflows_checkpoint WHERE run_id = r.id) IS DISTINCT FROM basis_checkpoint_id
    THEN
        RETURN;
    END IF;
    spent := round(r.spent_usd + COALESCE(cost, 0), 6);
    -- As workflows/services/alerts.py: a threshold the spend reaches now and that was not recorded.
    IF r.budget_usd IS NOT NULL AND r.budget_usd <> 0 AND EXISTS (
        SELECT FROM jsonb_array_elements_text(t.alert_thresholds) AS pct
        WHERE spent * 100 >= r.budget_usd * pct::numeric AND NOT EXISTS (
            SELECT FROM workflows_thresholdcrossing AS c
            WHERE c.scope = 'run' AND c.team_id = t.id AND c.run_id = r.id AND c.threshold_pct = pct::integer))
    THEN
        RETURN;
    END IF;
    IF t.period_budget_usd IS NOT NULL AND t.period_budget_usd <> 0 THEN
        bounds := workflows_period_bounds(t.period, at);
        SELECT COALESCE(sum(spent_usd), 0) + COALESCE(cost, 0) INTO period_spent FROM workflows_teamdailyspend
        WHERE team_id = t.id AND day >= bounds.first_day AND day < bounds.end_day;
        IF EXISTS (
            SELECT FROM jsonb_array_elements_text(t.alert_thresholds) AS pct
            WHERE period_spent * 100 >= t.period_budget_usd * pct::numeric AND NOT EXISTS (
                SELECT FROM workflows_thresholdcrossing AS c
                WHERE c.scope = 'team' AND c.team_id = t.id AND c.threshold_pct = pct::integer
                  AND c.period_start = bounds.first_day::timestamp AT TIME ZONE 'UTC'))
        THEN
            RETURN;
        END IF;
    END IF;

    active := r.active_time + COALESCE(at - r.active_since, interval '0');
    INSERT INTO workflows_ledgerentry (
        team_id, run_id, step_id, attempt, agent, provider, model, input_tokens, output_tokens, cached_input_tokens,
        cache_write_tokens, input_per_mtok, output_per_mtok, cached_input_per_mtok, cache_write_per_mtok,
        price_source, cost_usd, request_id, created_at)
    SELECT e.team_id, e.run_id, e.step_id, e.attempt, e.agent, e.provider, e.model, e.input_tokens, e.output_tokens,
           e.cached_input_tokens, e.cache_write_tokens, e.input_per_mtok, e.output_per_mtok, e.cached_input_per_mtok,
           e.cache_write_per_mtok, e.price_source, e.cost_usd, e.request_id, at
    FROM jsonb_populate_record(NULL::workflows_ledgerentry, ledger_entry) AS e;
    UPDATE workflows_run
    SET spent_usd = spent, unpriced_steps = unpriced_steps + (cost IS NULL)::integer,
        reserved_usd = round(reserved_usd - s.reserved_usd, 6), iterations = iterations + 1,
        current_agent = COALESCE(next_step->>'agent', ''), updated_at = at,
        -- A run that ends: completed, its output, its clock stopped.
        status = CASE WHEN ending THEN 'completed' ELSE status END,
        output = CASE WHEN ending THEN run_output ELSE output END,
        active_time = CASE WHEN ending THEN active ELSE active_time END,
        active_since = CASE WHEN ending THEN NULL ELSE active_since END,
        finished_at = CASE WHEN ending THEN at ELSE finished_at END
    WHERE id = r.id;
    IF s.reserved_usd <> 0 THEN
        UPDATE workflows_team SET reserved_usd = round(reserved_usd - s.reserved_usd, 6) WHERE id = t.id;
    END IF;
    UPDATE workflows_step AS x SET status = 'succeeded', reserved_usd = 0, output = step_output,
                                   error = NULL, finished_at = at
    WHERE x.id = step_id;
    -- Each event says what the run has spent after the step.
    INSERT INTO workflows_event (team_id, run_id, type, payload, actor, created_at)
    SELECT e.team_id, e.run_id, e.type, e.payload || jsonb_build_object('spent_usd', spent::text), e.actor, at
    FROM jsonb_array_elements(events) WITH ORDINALITY AS event(fields, position),
         jsonb_populate_record(NULL::workflows_event, event.fields) AS e
    ORDER BY event.position;
    IF NOT ending THEN
        INSERT INTO workflows_step (
            run_id, sequence, agent, iteration, "group", branch_index, branch_key, status, attempts, redeliveries,
            provider_retries, model, estimate_usd, reserved_usd, output, error, worker, enqueued_at, created_at,
            started_at, finished_at)
        SELECT n.run_id, n.sequence, n.agent,
               1 + (SELECT count(*) FROM workflows_step AS x WHERE x.run_id = r.id AND x.agent = n.agent),
               n."group", n.branch_index, n.branch_key, n.status, n.attempts, n.redeliveries, n.provider_retries,
               n.model, n.estimate_usd, n.reserved_usd, n.output, n.error, n.worker, at, at,
               n.started_at, n.finished_at
        FROM jsonb_populate_record(NULL::workflows_step, next_step) AS n
        RETURNING id INTO next_step_id;
    END IF;
    INSERT INTO workflows_checkpoint (
        run_id, reason, next_step_id, next_agent, outputs, iterations, spent_usd, active_time, created_at)
    SELECT c.run_id, c.reason, workflows_step_settle.next_step_id, c.next_agent, c.outputs, r.iterations + 1, spent,
           active, at
    FROM jsonb_populate_record(NULL::workflows_checkpoint, checkpoint) AS c;
    settled := true;
END
$$;
"""

DROP = """
DROP FUNCTION workflows_step_settle(bigint, integer, bigint, timestamptz, jsonb, jsonb, jsonb, jsonb, jsonb, jsonb);
DROP FUNCTION workflows_step_admit(bigint, numeric, text, text, bigint, timestamptz);
DROP FUNCTION workflows_period_bounds(text, timestamptz);
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTIONS, params=None)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("workflows", "0007_provider_retries_and_credentials")]

    operations = [migrations.RunPython(create, drop)]
