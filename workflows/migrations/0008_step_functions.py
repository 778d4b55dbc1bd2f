"""The common case of a step's two transactions as PostgreSQL functions, one round trip each.

`workflows/services/step_functions.py` calls them and says when; `docs/performance.md` says why.
Each function takes the team, run and step row locks in the one order, checks that the step is the
plain case it handles, and otherwise returns NULL having written nothing, so that the caller takes
the general path in Python. The rows it inserts are built in Python from the models, as JSON.
"""

from django.db import migrations

# Keep each value here equal to its choice in workflows/models.py.
FUNCTIONS = r"""
CREATE FUNCTION workflows_insert_row(target regclass, fields jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    columns text;
    new_id bigint;
BEGIN
    -- The columns are the keys Python sent: the model decides them, not this function.
    SELECT string_agg(quote_ident(key), ', ') INTO columns FROM jsonb_object_keys(fields) AS key;
    EXECUTE format('INSERT INTO %s (%s) SELECT %s FROM jsonb_populate_record(NULL::%s, $1) RETURNING id',
                   target, columns, columns, target)
        INTO new_id USING fields;
    RETURN new_id;
END
$$;

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
    WHERE id = (SELECT team_id FROM workflows_run WHERE id = (SELECT run_id FROM workflows_step AS x WHERE x.id = step_id))
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO r FROM workflows_run WHERE team_id = t.id
        AND id = (SELECT run_id FROM workflows_step AS x WHERE x.id = step_id) FOR NO KEY UPDATE;
    SELECT * INTO s FROM workflows_step AS x WHERE x.id = step_id FOR NO KEY UPDATE;
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
    step_id bigint, attempt integer, basis_checkpoint_id bigint, at timestamptz,
    step_output jsonb, ledger_entry jsonb, event jsonb, next_step jsonb, checkpoint jsonb
) RETURNS bigint
LANGUAGE plpgsql AS $$
-- Settle the attempt that owns a plain step whose routes lead to another plain step: the ledger
-- entry, the counters, the step, its event, the next step and the checkpoint that points at it.
-- The next step's id, or NULL for the general path: when the attempt no longer owns its step, the
-- run is not active, another checkpoint came, or the spend reaches an alert threshold not yet recorded.
DECLARE
    s workflows_step%ROWTYPE;
    r workflows_run%ROWTYPE;
    t workflows_team%ROWTYPE;
    bounds record;
    cost numeric := (ledger_entry->>'cost_usd')::numeric;
    spent numeric;
    period_spent numeric;
    next_step_id bigint;
BEGIN
    SELECT * INTO t FROM workflows_team
    WHERE id = (SELECT team_id FROM workflows_run WHERE id = (SELECT run_id FROM workflows_step AS x WHERE x.id = step_id))
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO r FROM workflows_run WHERE team_id = t.id
        AND id = (SELECT run_id FROM workflows_step AS x WHERE x.id = step_id) FOR NO KEY UPDATE;
    SELECT * INTO s FROM workflows_step AS x WHERE x.id = step_id FOR NO KEY UPDATE;
    IF s.status <> 'running' OR s.attempts <> attempt OR s."group" <> '' OR r.status NOT IN ('queued', 'running')
        OR (SELECT max(id) FROM workflows_checkpoint WHERE run_id = r.id) IS DISTINCT FROM basis_checkpoint_id
    THEN
        RETURN NULL;
    END IF;
    spent := round(r.spent_usd + COALESCE(cost, 0), 6);
    -- As workflows/services/alerts.py: a threshold the spend reaches now and that was not recorded.
    IF r.budget_usd IS NOT NULL AND r.budget_usd <> 0 AND EXISTS (
        SELECT FROM jsonb_array_elements_text(t.alert_thresholds) AS pct
        WHERE spent * 100 >= r.budget_usd * pct::numeric AND NOT EXISTS (
            SELECT FROM workflows_thresholdcrossing AS c
            WHERE c.scope = 'run' AND c.team_id = t.id AND c.run_id = r.id AND c.threshold_pct = pct::integer))
    THEN
        RETURN NULL;
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
            RETURN NULL;
        END IF;
    END IF;

    PERFORM workflows_insert_row('workflows_ledgerentry', ledger_entry);
    UPDATE workflows_run SET spent_usd = spent, unpriced_steps = unpriced_steps + (cost IS NULL)::integer,
                             reserved_usd = round(reserved_usd - s.reserved_usd, 6), iterations = iterations + 1,
                             current_agent = next_step->>'agent', updated_at = at
    WHERE id = r.id;
    IF s.reserved_usd <> 0 THEN
        UPDATE workflows_team SET reserved_usd = round(reserved_usd - s.reserved_usd, 6) WHERE id = t.id;
    END IF;
    UPDATE workflows_step AS x SET status = 'succeeded', reserved_usd = 0, output = step_output,
                                   error = NULL, finished_at = at
    WHERE x.id = step_id;
    PERFORM workflows_insert_row(
        'workflows_event',
        event || jsonb_build_object('payload', (event->'payload') || jsonb_build_object('spent_usd', spent::text)));
    next_step_id := workflows_insert_row(
        'workflows_step',
        next_step || jsonb_build_object('iteration', 1 + (
            SELECT count(*) FROM workflows_step AS x WHERE x.run_id = r.id AND x.agent = next_step->>'agent')));
    PERFORM workflows_insert_row(
        'workflows_checkpoint',
        checkpoint || jsonb_build_object(
            'next_step_id', next_step_id,
            'iterations', r.iterations + 1,
            'spent_usd', spent,
            'active_time', r.active_time + COALESCE(at - r.active_since, interval '0')));
    RETURN next_step_id;
END
$$;
"""

DROP = """
DROP FUNCTION workflows_step_settle(bigint, integer, bigint, timestamptz, jsonb, jsonb, jsonb, jsonb, jsonb);
DROP FUNCTION workflows_step_admit(bigint, numeric, text, text, bigint, timestamptz);
DROP FUNCTION workflows_period_bounds(text, timestamptz);
DROP FUNCTION workflows_insert_row(regclass, jsonb);
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
