using BenchmarkDotNet.Attributes;
using Bursar.Core.Batch;
using Bursar.Core.Pipeline;
using Bursar.Storage.Sqlite;

namespace Bursar.Benchmarks;

/// <summary>
/// The batch lever's costs: queuing one deferred job durably in the SQLite store (the 202's work: one INSERT in WAL mode,
/// target 5,000 jobs/s or more), and what the deferral check adds to a call that is not deferred (target 1 us or less).
/// </summary>
[MemoryDiagnoser]
public class DeferralBenchmarks
{
    private string _dir = "";
    private SqliteStore _store = null!;
    private DeferralStage _stage = null!;
    private LeverCall _call = null!;
    private byte[] _body = [];
    private int _i;

    private sealed class NoQueue : IJobQueue
    {
        public ValueTask<string?> EnqueueAsync(LeverCall call, TimeSpan delay, CancellationToken cancellationToken) => ValueTask.FromResult<string?>(null);
    }

    private static readonly LeverNext Next = static (_, _) => ValueTask.CompletedTask;

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "bursar-defer-bench-" + Guid.NewGuid().ToString("N"));
        _store = new SqliteStore(Path.Combine(_dir, "bursar.db"), _ => { });
        _body = System.Text.Encoding.UTF8.GetBytes("""{"model":"gpt-4o-mini","max_completion_tokens":200,"messages":[{"role":"system","content":"You classify support tickets into one of twelve queues."},{"role":"user","content":"My invoice for November shows two charges for the same seat; please refund one of them."}]}""");
        _stage = new DeferralStage(new NoQueue(), new DeferralOptions());
        var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { ["x-bursar-feature"] = "support", ["authorization"] = "Bearer bsr_x" };
        _call = new LeverCall { Id = "c", Started = DateTimeOffset.UnixEpoch, StartTimestamp = 0, Dialect = "openai", Tags = name => headers.GetValueOrDefault(name) };
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_dir, true);
    }

    [Benchmark(Description = "enqueue one deferred job (SQLite, WAL)")]
    public Task EnqueueJob()
    {
        var now = DateTimeOffset.UnixEpoch.AddSeconds(_i);
        return _store.EnqueueAsync(new DeferredJob
        {
            Id = "job_" + (_i++).ToString("x32", System.Globalization.CultureInfo.InvariantCulture), KeyId = "key_7", Team = "support", Feature = "ticket-triage",
            Dialect = "openai", Deployment = "openai", Model = "gpt-4o-mini", RequestedModel = "gpt-4o-mini", Body = _body, CreatedAt = now, Deadline = now.AddHours(24),
            WorstUsd = 0.00006m, UpdatedAt = now,
        }, default);
    }

    [Benchmark(Description = "deferral check, call not deferred")]
    public ValueTask DeferralCheck() => _stage.InvokeAsync(_call, Next, default);
}
