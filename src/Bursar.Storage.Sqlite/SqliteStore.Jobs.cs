using Bursar.Core.Batch;
using Microsoft.Data.Sqlite;

namespace Bursar.Storage.Sqlite;

/// <summary>The queue of deferred jobs (<see cref="IJobStore"/>), in the same file as the ledger.</summary>
public sealed partial class SqliteStore : IJobStore
{
    private const string JobColumns = "id, key_id, team, customer, feature, task, template, route, dialect, deployment, model, requested_model, body, created_unix_ms, deadline_unix_ms, worst_usd, state, batch_id, status_code, result, error, updated_unix_ms";

    private static DeferredJob ReadJob(SqliteDataReader r)
    {
        string? S(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        return new DeferredJob
        {
            Id = r.GetString(0), KeyId = r.GetString(1), Team = S(2), Customer = S(3), Feature = S(4), Task = S(5), Template = S(6), Route = S(7),
            Dialect = r.GetString(8), Deployment = r.GetString(9), Model = r.GetString(10), RequestedModel = S(11), Body = (byte[])r.GetValue(12),
            CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(13)), Deadline = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(14)),
            WorstUsd = ParseDec(r.GetString(15)), State = Enum.Parse<JobState>(r.GetString(16)), BatchId = S(17), StatusCode = (int)r.GetInt64(18),
            Result = r.IsDBNull(19) ? null : (byte[])r.GetValue(19), Error = S(20), UpdatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(21)),
        };
    }

    public Task EnqueueAsync(DeferredJob j, CancellationToken cancellationToken)
    {
        NonQuery($"INSERT INTO jobs ({JobColumns}) VALUES ($id,$key,$team,$customer,$feature,$task,$template,$route,$dialect,$deployment,$model,$requested,$body,$created,$deadline,$worst,$state,NULL,0,NULL,NULL,$created)",
            ("$id", j.Id), ("$key", j.KeyId), ("$team", j.Team), ("$customer", j.Customer), ("$feature", j.Feature), ("$task", j.Task), ("$template", j.Template), ("$route", j.Route),
            ("$dialect", j.Dialect), ("$deployment", j.Deployment), ("$model", j.Model), ("$requested", j.RequestedModel), ("$body", j.Body),
            ("$created", j.CreatedAt.ToUnixTimeMilliseconds()), ("$deadline", j.Deadline.ToUnixTimeMilliseconds()), ("$worst", Dec(j.WorstUsd)), ("$state", nameof(JobState.Queued)));
        return Task.CompletedTask;
    }

    public Task<DeferredJob?> FindJobAsync(string id, CancellationToken cancellationToken) =>
        Task.FromResult(Query($"SELECT {JobColumns} FROM jobs WHERE id = $id", ReadJob, ("$id", id)).FirstOrDefault());

    public Task<IReadOnlyList<(string Deployment, string Model, int Count, DateTimeOffset Oldest, DateTimeOffset NearestDeadline)>> QueuedGroupsAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<(string, string, int, DateTimeOffset, DateTimeOffset)>>(Query(
            "SELECT deployment, model, COUNT(*), MIN(created_unix_ms), MIN(deadline_unix_ms) FROM jobs WHERE state = 'Queued' GROUP BY deployment, model",
            r => (r.GetString(0), r.GetString(1), (int)r.GetInt64(2), DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(3)), DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(4)))));

    public Task<IReadOnlyList<DeferredJob>> QueuedAsync(string deployment, string model, int limit, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<DeferredJob>>(Query($"SELECT {JobColumns} FROM jobs WHERE state = 'Queued' AND deployment = $d AND model = $m ORDER BY created_unix_ms, id LIMIT $limit",
            ReadJob, ("$d", deployment), ("$m", model), ("$limit", limit)));

    public Task AssignAsync(IReadOnlyList<string> jobIds, string batchId, DateTimeOffset when, CancellationToken cancellationToken)
    {
        using var c = Open();
        using var tx = c.BeginTransaction();
        using var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "UPDATE jobs SET state = 'Submitted', batch_id = $b, updated_unix_ms = $t WHERE id = $id AND state = 'Queued'";
        cmd.Parameters.AddWithValue("$b", batchId);
        cmd.Parameters.AddWithValue("$t", when.ToUnixTimeMilliseconds());
        var id = cmd.Parameters.Add("$id", SqliteType.Text);
        foreach (var j in jobIds)
        {
            id.Value = j;
            cmd.ExecuteNonQuery();
        }
        tx.Commit();
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<DeferredJob>> JobsOfBatchAsync(string batchId, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<DeferredJob>>(Query($"SELECT {JobColumns} FROM jobs WHERE batch_id = $b ORDER BY created_unix_ms, id", ReadJob, ("$b", batchId)));

    public Task<int> RequeueAsync(string batchId, DateTimeOffset when, CancellationToken cancellationToken) =>
        Task.FromResult(NonQuery("UPDATE jobs SET state = 'Queued', batch_id = NULL, updated_unix_ms = $t WHERE batch_id = $b AND state = 'Submitted'",
            ("$b", batchId), ("$t", when.ToUnixTimeMilliseconds())));

    public Task<bool> FinishAsync(string id, JobState state, int statusCode, byte[]? result, string? error, DateTimeOffset when, CancellationToken cancellationToken) =>
        Task.FromResult(NonQuery("UPDATE jobs SET state = $s, status_code = $code, result = $r, error = $e, updated_unix_ms = $t WHERE id = $id AND (state = 'Queued' OR (state = 'Submitted' AND $s <> 'Canceled'))",
            ("$id", id), ("$s", state.ToString()), ("$code", statusCode), ("$r", result), ("$e", error), ("$t", when.ToUnixTimeMilliseconds())) == 1);

    public Task<IReadOnlyList<DeferredJob>> ListJobsAsync(JobState? state, int limit, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<DeferredJob>>(Query($"SELECT {JobColumns} FROM jobs WHERE ($s IS NULL OR state = $s) ORDER BY created_unix_ms DESC, id DESC LIMIT $limit",
            ReadJob, ("$s", state?.ToString()), ("$limit", limit)));
}
