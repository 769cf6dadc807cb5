using Bursar.Core.Batch;
using Npgsql;

namespace Bursar.Storage.PostgreSql;

/// <summary>Provider batches, their files and the deferred jobs' queue (<see cref="IBatchStore"/>, <see cref="IJobStore"/>): migration 2's tables.</summary>
public sealed partial class PostgresStore : IBatchStore, IJobStore
{
    private const string BatchColumns = "id, dialect, deployment, upstream_id, state, key_id, team, customer, feature, task, template, route, model, lines, worst_usd::text, manifest, input_file_id, created_unix_ms, updated_unix_ms, collected, object, error, jobs";

    private static string? S(NpgsqlDataReader r, int i) => r.IsDBNull(i) ? null : r.GetString(i);

    private static BatchState ReadBatch(NpgsqlDataReader r) => new()
    {
        Id = r.GetString(0), Dialect = r.GetString(1), Deployment = r.GetString(2), UpstreamId = S(r, 3), Phase = Enum.Parse<BatchPhase>(r.GetString(4)),
        KeyId = r.GetString(5), Team = S(r, 6), Customer = S(r, 7), Feature = S(r, 8), Task = S(r, 9), Template = S(r, 10), Route = S(r, 11),
        Model = S(r, 12), Lines = r.GetInt32(13), WorstUsd = ParseMoney(r.GetString(14)), Manifest = r.GetString(15), InputFileId = S(r, 16),
        CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(17)), UpdatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(18)),
        Collected = r.GetBoolean(19), Object = S(r, 20), Error = S(r, 21), Jobs = r.GetBoolean(22),
    };

    public async Task SaveBatchAsync(BatchState b, CancellationToken cancellationToken) =>
        await NonQueryAsync("INSERT INTO batches (id, dialect, deployment, upstream_id, state, key_id, team, customer, feature, task, template, route, model, lines, worst_usd, manifest, input_file_id, created_unix_ms, updated_unix_ms, collected, object, error, jobs) "
            + "VALUES (@id, @dialect, @deployment, @upstream, @state, @key, @team, @customer, @feature, @task, @template, @route, @model, @lines, @worst, @manifest, @input, @created, @updated, @collected, @object, @error, @jobs) "
            + "ON CONFLICT (id) DO UPDATE SET upstream_id = excluded.upstream_id, state = excluded.state, updated_unix_ms = excluded.updated_unix_ms, collected = excluded.collected, object = excluded.object, error = excluded.error",
            cancellationToken,
            ("id", b.Id), ("dialect", b.Dialect), ("deployment", b.Deployment), ("upstream", b.UpstreamId), ("state", b.Phase.ToString()), ("key", b.KeyId),
            ("team", b.Team is null ? null : Clean(b.Team)), ("customer", b.Customer is null ? null : Clean(b.Customer)), ("feature", b.Feature is null ? null : Clean(b.Feature)),
            ("task", b.Task is null ? null : Clean(b.Task)), ("template", b.Template is null ? null : Clean(b.Template)), ("route", b.Route), ("model", b.Model),
            ("lines", b.Lines), ("worst", b.WorstUsd), ("manifest", b.Manifest), ("input", b.InputFileId), ("created", b.CreatedAt.ToUnixTimeMilliseconds()),
            ("updated", (b.UpdatedAt == default ? b.CreatedAt : b.UpdatedAt).ToUnixTimeMilliseconds()), ("collected", b.Collected), ("object", b.Object is null ? null : Clean(b.Object)),
            ("error", b.Error is null ? null : Clean(b.Error)), ("jobs", b.Jobs)).ConfigureAwait(false);

    public async Task<BatchState?> FindBatchAsync(string id, CancellationToken cancellationToken) =>
        (await QueryAsync($"SELECT {BatchColumns} FROM batches WHERE id = @id", ReadBatch, cancellationToken, ("id", id)).ConfigureAwait(false)).FirstOrDefault();

    public async Task<IReadOnlyList<BatchState>> ListBatchesAsync(string? keyId, string? dialect, int limit, CancellationToken cancellationToken) =>
        await QueryAsync($"SELECT {BatchColumns} FROM batches WHERE (@key::text IS NULL OR key_id = @key::text) AND (@dialect::text IS NULL OR dialect = @dialect::text) ORDER BY created_unix_ms DESC, id DESC LIMIT @limit",
            ReadBatch, cancellationToken, ("key", keyId), ("dialect", dialect), ("limit", limit)).ConfigureAwait(false);

    public async Task<IReadOnlyList<BatchState>> ListOpenBatchesAsync(CancellationToken cancellationToken) =>
        await QueryAsync($"SELECT {BatchColumns} FROM batches WHERE NOT collected ORDER BY created_unix_ms", ReadBatch, cancellationToken).ConfigureAwait(false);

    private const string FileColumns = "id, deployment, upstream_id, key_id, purpose, filename, bytes, lines, model, worst_usd::text, spool, created_unix_ms, deleted";

    private static BatchFileState ReadFile(NpgsqlDataReader r) => new()
    {
        Id = r.GetString(0), Deployment = r.GetString(1), UpstreamId = r.GetString(2), KeyId = r.GetString(3), Purpose = r.GetString(4), Filename = S(r, 5),
        Bytes = r.GetInt64(6), Lines = r.GetInt32(7), Model = S(r, 8), WorstUsd = ParseMoney(r.GetString(9)), Spool = S(r, 10),
        CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(11)), Deleted = r.GetBoolean(12),
    };

    public async Task SaveFileAsync(BatchFileState f, CancellationToken cancellationToken) =>
        await NonQueryAsync("INSERT INTO batch_files (id, deployment, upstream_id, key_id, purpose, filename, bytes, lines, model, worst_usd, spool, created_unix_ms, deleted) "
            + "VALUES (@id, @deployment, @upstream, @key, @purpose, @filename, @bytes, @lines, @model, @worst, @spool, @created, @deleted) "
            + "ON CONFLICT (id) DO UPDATE SET deleted = excluded.deleted, spool = excluded.spool",
            cancellationToken, ("id", f.Id), ("deployment", f.Deployment), ("upstream", f.UpstreamId), ("key", f.KeyId), ("purpose", f.Purpose),
            ("filename", f.Filename is null ? null : Clean(f.Filename)), ("bytes", f.Bytes), ("lines", f.Lines), ("model", f.Model), ("worst", f.WorstUsd), ("spool", f.Spool),
            ("created", f.CreatedAt.ToUnixTimeMilliseconds()), ("deleted", f.Deleted)).ConfigureAwait(false);

    public async Task<BatchFileState?> FindFileAsync(string id, CancellationToken cancellationToken) =>
        (await QueryAsync($"SELECT {FileColumns} FROM batch_files WHERE id = @id", ReadFile, cancellationToken, ("id", id)).ConfigureAwait(false)).FirstOrDefault();

    public async Task<BatchFileState?> FindFileByUpstreamAsync(string deployment, string upstreamId, CancellationToken cancellationToken) =>
        (await QueryAsync($"SELECT {FileColumns} FROM batch_files WHERE deployment = @d AND upstream_id = @u", ReadFile, cancellationToken, ("d", deployment), ("u", upstreamId)).ConfigureAwait(false)).FirstOrDefault();

    // ---------------------------------------------------------------- deferred jobs

    private const string JobColumns = "id, key_id, team, customer, feature, task, template, route, dialect, deployment, model, requested_model, body, created_unix_ms, deadline_unix_ms, worst_usd::text, state, batch_id, status_code, result, error, updated_unix_ms";

    private static DeferredJob ReadJob(NpgsqlDataReader r) => new()
    {
        Id = r.GetString(0), KeyId = r.GetString(1), Team = S(r, 2), Customer = S(r, 3), Feature = S(r, 4), Task = S(r, 5), Template = S(r, 6), Route = S(r, 7),
        Dialect = r.GetString(8), Deployment = r.GetString(9), Model = r.GetString(10), RequestedModel = S(r, 11), Body = (byte[])r.GetValue(12),
        CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(13)), Deadline = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(14)),
        WorstUsd = ParseMoney(r.GetString(15)), State = Enum.Parse<JobState>(r.GetString(16)), BatchId = S(r, 17), StatusCode = r.GetInt32(18),
        Result = r.IsDBNull(19) ? null : (byte[])r.GetValue(19), Error = S(r, 20), UpdatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(21)),
    };

    public async Task EnqueueAsync(DeferredJob j, CancellationToken cancellationToken) =>
        await NonQueryAsync($"INSERT INTO jobs ({JobColumns.Replace("worst_usd::text", "worst_usd", StringComparison.Ordinal)}) VALUES (@id, @key, @team, @customer, @feature, @task, @template, @route, @dialect, @deployment, @model, @requested, @body, @created, @deadline, @worst, 'Queued', NULL, 0, NULL, NULL, @created)",
            cancellationToken, ("id", j.Id), ("key", j.KeyId), ("team", j.Team is null ? null : Clean(j.Team)), ("customer", j.Customer is null ? null : Clean(j.Customer)),
            ("feature", j.Feature is null ? null : Clean(j.Feature)), ("task", j.Task is null ? null : Clean(j.Task)), ("template", j.Template is null ? null : Clean(j.Template)),
            ("route", j.Route), ("dialect", j.Dialect), ("deployment", j.Deployment), ("model", j.Model), ("requested", j.RequestedModel), ("body", j.Body),
            ("created", j.CreatedAt.ToUnixTimeMilliseconds()), ("deadline", j.Deadline.ToUnixTimeMilliseconds()), ("worst", j.WorstUsd)).ConfigureAwait(false);

    public async Task<DeferredJob?> FindJobAsync(string id, CancellationToken cancellationToken) =>
        (await QueryAsync($"SELECT {JobColumns} FROM jobs WHERE id = @id", ReadJob, cancellationToken, ("id", id)).ConfigureAwait(false)).FirstOrDefault();

    public async Task<IReadOnlyList<(string Deployment, string Model, int Count, DateTimeOffset Oldest, DateTimeOffset NearestDeadline)>> QueuedGroupsAsync(CancellationToken cancellationToken) =>
        await QueryAsync("SELECT deployment, model, COUNT(*)::int, MIN(created_unix_ms), MIN(deadline_unix_ms) FROM jobs WHERE state = 'Queued' GROUP BY deployment, model",
            r => (r.GetString(0), r.GetString(1), r.GetInt32(2), DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(3)), DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(4))), cancellationToken).ConfigureAwait(false);

    public async Task<IReadOnlyList<DeferredJob>> QueuedAsync(string deployment, string model, int limit, CancellationToken cancellationToken) =>
        await QueryAsync($"SELECT {JobColumns} FROM jobs WHERE state = 'Queued' AND deployment = @d AND model = @m ORDER BY created_unix_ms, id LIMIT @limit",
            ReadJob, cancellationToken, ("d", deployment), ("m", model), ("limit", limit)).ConfigureAwait(false);

    public async Task AssignAsync(IReadOnlyList<string> jobIds, string batchId, DateTimeOffset when, CancellationToken cancellationToken) =>
        await NonQueryAsync("UPDATE jobs SET state = 'Submitted', batch_id = @b, updated_unix_ms = @t WHERE id = ANY(@ids) AND state = 'Queued'",
            cancellationToken, ("b", batchId), ("t", when.ToUnixTimeMilliseconds()), ("ids", jobIds.ToArray())).ConfigureAwait(false);

    public async Task<IReadOnlyList<DeferredJob>> JobsOfBatchAsync(string batchId, CancellationToken cancellationToken) =>
        await QueryAsync($"SELECT {JobColumns} FROM jobs WHERE batch_id = @b ORDER BY created_unix_ms, id", ReadJob, cancellationToken, ("b", batchId)).ConfigureAwait(false);

    public Task<int> RequeueAsync(string batchId, DateTimeOffset when, CancellationToken cancellationToken) =>
        NonQueryAsync("UPDATE jobs SET state = 'Queued', batch_id = NULL, updated_unix_ms = @t WHERE batch_id = @b AND state = 'Submitted'",
            cancellationToken, ("b", batchId), ("t", when.ToUnixTimeMilliseconds()));

    public async Task<bool> FinishAsync(string id, JobState state, int statusCode, byte[]? result, string? error, DateTimeOffset when, CancellationToken cancellationToken) =>
        await NonQueryAsync("UPDATE jobs SET state = @s, status_code = @code, result = @r::bytea, error = @e, updated_unix_ms = @t WHERE id = @id AND (state = 'Queued' OR (state = 'Submitted' AND @s <> 'Canceled'))",
            cancellationToken, ("id", id), ("s", state.ToString()), ("code", statusCode), ("r", result), ("e", error is null ? null : Clean(error)), ("t", when.ToUnixTimeMilliseconds())).ConfigureAwait(false) == 1;

    public async Task<IReadOnlyList<DeferredJob>> ListJobsAsync(JobState? state, int limit, CancellationToken cancellationToken) =>
        await QueryAsync($"SELECT {JobColumns} FROM jobs WHERE (@s::text IS NULL OR state = @s::text) ORDER BY created_unix_ms DESC, id DESC LIMIT @limit",
            ReadJob, cancellationToken, ("s", state?.ToString()), ("limit", limit)).ConfigureAwait(false);
}
