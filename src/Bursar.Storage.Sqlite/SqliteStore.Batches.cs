using System.Globalization;
using Bursar.Core.Batch;
using Microsoft.Data.Sqlite;

namespace Bursar.Storage.Sqlite;

/// <summary>Provider batches and their files (<see cref="IBatchStore"/>), in the same file as the ledger.</summary>
public sealed partial class SqliteStore : IBatchStore
{
    private static void MigrateBatches(SqliteConnection c)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = """
            CREATE TABLE IF NOT EXISTS batches (
              id TEXT PRIMARY KEY, dialect TEXT NOT NULL, deployment TEXT NOT NULL, upstream_id TEXT, state TEXT NOT NULL,
              key_id TEXT NOT NULL, team TEXT, customer TEXT, feature TEXT, task TEXT, template TEXT, route TEXT,
              model TEXT, lines INTEGER NOT NULL, worst_usd TEXT NOT NULL, manifest TEXT NOT NULL, input_file_id TEXT,
              created_unix_ms INTEGER NOT NULL, updated_unix_ms INTEGER NOT NULL, collected INTEGER NOT NULL DEFAULT 0, object TEXT, error TEXT, jobs INTEGER NOT NULL DEFAULT 0
            );
            CREATE INDEX IF NOT EXISTS batches_open ON batches(collected, state);
            CREATE TABLE IF NOT EXISTS batch_files (
              id TEXT PRIMARY KEY, deployment TEXT NOT NULL, upstream_id TEXT NOT NULL, key_id TEXT NOT NULL, purpose TEXT NOT NULL,
              filename TEXT, bytes INTEGER NOT NULL, lines INTEGER NOT NULL, model TEXT, worst_usd TEXT NOT NULL, spool TEXT,
              created_unix_ms INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0
            );
            CREATE UNIQUE INDEX IF NOT EXISTS batch_files_upstream ON batch_files(deployment, upstream_id);
            CREATE INDEX IF NOT EXISTS ledger_batch ON ledger(batch_id) WHERE batch_id IS NOT NULL;
            CREATE TABLE IF NOT EXISTS jobs (
              id TEXT PRIMARY KEY, key_id TEXT NOT NULL, team TEXT, customer TEXT, feature TEXT, task TEXT, template TEXT, route TEXT,
              dialect TEXT NOT NULL, deployment TEXT NOT NULL, model TEXT NOT NULL, requested_model TEXT, body BLOB NOT NULL,
              created_unix_ms INTEGER NOT NULL, deadline_unix_ms INTEGER NOT NULL, worst_usd TEXT NOT NULL, state TEXT NOT NULL, batch_id TEXT,
              status_code INTEGER NOT NULL DEFAULT 0, result BLOB, error TEXT, updated_unix_ms INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(state, deployment, model, created_unix_ms);
            CREATE INDEX IF NOT EXISTS jobs_batch ON jobs(batch_id) WHERE batch_id IS NOT NULL;
            """;
        cmd.ExecuteNonQuery();
    }

    private const string BatchColumns = "id, dialect, deployment, upstream_id, state, key_id, team, customer, feature, task, template, route, model, lines, worst_usd, manifest, input_file_id, created_unix_ms, updated_unix_ms, collected, object, error, jobs";

    public Task SaveBatchAsync(BatchState b, CancellationToken cancellationToken)
    {
        NonQuery($"INSERT INTO batches ({BatchColumns}) VALUES ($id,$dialect,$deployment,$upstream,$state,$key,$team,$customer,$feature,$task,$template,$route,$model,$lines,$worst,$manifest,$input,$created,$updated,$collected,$object,$error,$jobs) "
            + "ON CONFLICT(id) DO UPDATE SET upstream_id=excluded.upstream_id, state=excluded.state, updated_unix_ms=excluded.updated_unix_ms, collected=excluded.collected, object=excluded.object, error=excluded.error",
            ("$id", b.Id), ("$dialect", b.Dialect), ("$deployment", b.Deployment), ("$upstream", b.UpstreamId), ("$state", b.Phase.ToString()),
            ("$key", b.KeyId), ("$team", b.Team), ("$customer", b.Customer), ("$feature", b.Feature), ("$task", b.Task), ("$template", b.Template), ("$route", b.Route),
            ("$model", b.Model), ("$lines", b.Lines), ("$worst", Dec(b.WorstUsd)), ("$manifest", b.Manifest), ("$input", b.InputFileId),
            ("$created", b.CreatedAt.ToUnixTimeMilliseconds()), ("$updated", (b.UpdatedAt == default ? b.CreatedAt : b.UpdatedAt).ToUnixTimeMilliseconds()),
            ("$collected", b.Collected ? 1 : 0), ("$object", b.Object), ("$error", b.Error), ("$jobs", b.Jobs ? 1 : 0));
        return Task.CompletedTask;
    }

    private static BatchState ReadBatch(SqliteDataReader r)
    {
        string? S(int i) => r.IsDBNull(i) ? null : r.GetString(i);
        return new BatchState
        {
            Id = r.GetString(0), Dialect = r.GetString(1), Deployment = r.GetString(2), UpstreamId = S(3), Phase = Enum.Parse<BatchPhase>(r.GetString(4)),
            KeyId = r.GetString(5), Team = S(6), Customer = S(7), Feature = S(8), Task = S(9), Template = S(10), Route = S(11),
            Model = S(12), Lines = (int)r.GetInt64(13), WorstUsd = ParseDec(r.GetString(14)), Manifest = r.GetString(15), InputFileId = S(16),
            CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(17)), UpdatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(18)),
            Collected = r.GetInt64(19) != 0, Object = S(20), Error = S(21), Jobs = r.GetInt64(22) != 0,
        };
    }

    public Task<BatchState?> FindBatchAsync(string id, CancellationToken cancellationToken) =>
        Task.FromResult(Query($"SELECT {BatchColumns} FROM batches WHERE id = $id", ReadBatch, ("$id", id)).FirstOrDefault());

    public Task<IReadOnlyList<BatchState>> ListBatchesAsync(string? keyId, string? dialect, int limit, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<BatchState>>(Query(
            $"SELECT {BatchColumns} FROM batches WHERE ($key IS NULL OR key_id = $key) AND ($dialect IS NULL OR dialect = $dialect) ORDER BY created_unix_ms DESC, id DESC LIMIT $limit",
            ReadBatch, ("$key", keyId), ("$dialect", dialect), ("$limit", limit)));

    public Task<IReadOnlyList<BatchState>> ListOpenBatchesAsync(CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<BatchState>>(Query($"SELECT {BatchColumns} FROM batches WHERE collected = 0 ORDER BY created_unix_ms", ReadBatch));

    public Task SaveFileAsync(BatchFileState f, CancellationToken cancellationToken)
    {
        NonQuery("INSERT INTO batch_files (id, deployment, upstream_id, key_id, purpose, filename, bytes, lines, model, worst_usd, spool, created_unix_ms, deleted) "
            + "VALUES ($id,$deployment,$upstream,$key,$purpose,$filename,$bytes,$lines,$model,$worst,$spool,$created,$deleted) "
            + "ON CONFLICT(id) DO UPDATE SET deleted = excluded.deleted, spool = excluded.spool",
            ("$id", f.Id), ("$deployment", f.Deployment), ("$upstream", f.UpstreamId), ("$key", f.KeyId), ("$purpose", f.Purpose), ("$filename", f.Filename),
            ("$bytes", f.Bytes), ("$lines", f.Lines), ("$model", f.Model), ("$worst", Dec(f.WorstUsd)), ("$spool", f.Spool),
            ("$created", f.CreatedAt.ToUnixTimeMilliseconds()), ("$deleted", f.Deleted ? 1 : 0));
        return Task.CompletedTask;
    }

    private const string FileColumns = "id, deployment, upstream_id, key_id, purpose, filename, bytes, lines, model, worst_usd, spool, created_unix_ms, deleted";

    private static BatchFileState ReadFile(SqliteDataReader r) => new()
    {
        Id = r.GetString(0), Deployment = r.GetString(1), UpstreamId = r.GetString(2), KeyId = r.GetString(3), Purpose = r.GetString(4),
        Filename = r.IsDBNull(5) ? null : r.GetString(5), Bytes = r.GetInt64(6), Lines = (int)r.GetInt64(7), Model = r.IsDBNull(8) ? null : r.GetString(8),
        WorstUsd = decimal.Parse(r.GetString(9), NumberStyles.Float, CultureInfo.InvariantCulture), Spool = r.IsDBNull(10) ? null : r.GetString(10),
        CreatedAt = DateTimeOffset.FromUnixTimeMilliseconds(r.GetInt64(11)), Deleted = r.GetInt64(12) != 0,
    };

    public Task<BatchFileState?> FindFileAsync(string id, CancellationToken cancellationToken) =>
        Task.FromResult(Query($"SELECT {FileColumns} FROM batch_files WHERE id = $id", ReadFile, ("$id", id)).FirstOrDefault());

    public Task<BatchFileState?> FindFileByUpstreamAsync(string deployment, string upstreamId, CancellationToken cancellationToken) =>
        Task.FromResult(Query($"SELECT {FileColumns} FROM batch_files WHERE deployment = $d AND upstream_id = $u", ReadFile, ("$d", deployment), ("$u", upstreamId)).FirstOrDefault());
}
