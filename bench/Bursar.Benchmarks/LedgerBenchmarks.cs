using BenchmarkDotNet.Attributes;
using Bursar.Core.Ledger;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Benchmarks;

/// <summary>
/// What making a ledger record durable costs a call: the journal append on the request path (serialize, one write
/// under a lock), with the default fsync policy (Interval: no fsync wait) and with Always (the call waits for a group
/// fsync). The store writer runs behind it against a store that takes every batch at once.
/// </summary>
[MemoryDiagnoser]
public class LedgerBenchmarks
{
    private LedgerWriter _writer = null!;
    private string _dir = "";
    private int _i;

    [Params(LedgerFsync.Interval, LedgerFsync.Always)]
    public LedgerFsync Fsync { get; set; }

    private sealed class NullStore : ILedgerStore
    {
        public Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken ct) => Task.CompletedTask;
        public Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery q, CancellationToken ct) => Task.FromResult<IReadOnlyList<LedgerRecord>>([]);
        public Task<long> CountAsync(CancellationToken ct) => Task.FromResult(0L);
    }

    [GlobalSetup]
    public void Setup()
    {
        _dir = Path.Combine(Path.GetTempPath(), "bursar-ledger-bench-" + Guid.NewGuid().ToString("N"));
        _writer = new LedgerWriter(new NullStore(), new LedgerWriterOptions { SpoolDirectory = _dir, Fsync = Fsync }, NullLogger<LedgerWriter>.Instance);
        _writer.Start();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _writer.DisposeAsync().AsTask().GetAwaiter().GetResult();
        Directory.Delete(_dir, true);
    }

    [Benchmark]
    public ValueTask AppendOneRecord() => _writer.AppendAsync(new LedgerRecord
    {
        Id = "01a23390244770989531c2cac22" + (_i++).ToString("D5", System.Globalization.CultureInfo.InvariantCulture),
        Timestamp = DateTimeOffset.UnixEpoch,
        KeyId = "key_7", Team = "search", Customer = "acme", Feature = "support-chat", Dialect = "openai", Provider = "openai",
        RequestedModel = "gpt-4o-mini", ServedModel = "gpt-4o-mini-2024-07-18", InputTokens = 1234, OutputTokens = 321, Priced = true,
        Cost = 0.0003777m, CounterfactualCost = 0.0003777m, Outcome = "ok", StatusCode = 200, LatencyMs = 123.4, FinishReason = "stop",
    });
}
