using BenchmarkDotNet.Attributes;
using Bursar.Core.Attribution;
using Bursar.Core.Caching;
using Bursar.Core.Ledger;
using Bursar.Core.Reporting;
using Bursar.Core.Routing;
using Bursar.Core.Tokens;

namespace Bursar.Benchmarks;

/// <summary>
/// What issues 5 and 6 added to every call: matching 20 route policies, the prefix fingerprint of a long system prompt
/// (memoized token count), and folding a ledger record into its rollup deltas in the writer.
/// </summary>
[MemoryDiagnoser]
public class RequestPathBenchmarks
{
    private RoutingOptions _routes = null!;
    private readonly CallAttribution _attribution = new() { KeyId = "key_7", Team = "team-3", Customer = "customer-12", Feature = "support", Task = "chat" };
    private PrefixFingerprint _prefixes = null!;
    private readonly string _system = string.Join(' ', Enumerable.Range(0, 300).Select(i => $"Rule {i}: answer politely and cite the policy."));
    private LedgerRecord[] _batch = [];

    [GlobalSetup]
    public void Setup()
    {
        // 20 routes, none of which matches the call: the worst case, every route is tried
        _routes = new RoutingOptions { Routes = Enumerable.Range(0, 20).Select(i => new RoutePolicy { Name = "r" + i, Task = "task-" + i, Model = "gpt-4.1-nano", MaxTokens = 100 }).ToList() };
        _prefixes = new PrefixFingerprint(TokenCounter.Default);
        _prefixes.Of("claude-sonnet-4-5", _system);
        var t0 = DateTimeOffset.UnixEpoch.AddDays(20000);
        _batch = Enumerable.Range(0, 512).Select(i => new LedgerRecord
        {
            Id = i.ToString(System.Globalization.CultureInfo.InvariantCulture), Timestamp = t0.AddMilliseconds(i * 100), Dialect = "openai", Outcome = "ok",
            Feature = "f" + (i % 20), Team = "t" + (i % 8), Customer = "c" + (i % 500), ServedModel = "gpt-4.1", RequestedModel = "gpt-4.1", Task = "chat",
            InputTokens = 1000, OutputTokens = 100, Priced = true, Cost = 0.0028m,
        }).ToArray();
    }

    [Benchmark]
    public RoutePolicy? MatchTwentyRoutes() => _routes.Match(_attribution, "gpt-4.1", 1200);

    [Benchmark]
    public (string, long)? PrefixFingerprintOfKnownPrompt() => _prefixes.Of("claude-sonnet-4-5", _system);

    /// <summary>Per batch of 512 records (the writer's largest batch), hourly and daily deltas as the writer builds them: one fold, daily summed from hourly.</summary>
    [Benchmark]
    public int RollupDeltasFor512Records()
    {
        var hourly = LedgerRollup.Aggregate(_batch, LedgerRollup.Hour);
        return hourly.Count + LedgerRollup.Coarsen(hourly, LedgerRollup.Day).Count;
    }

    /// <summary>The first version: every record folded once per bucket size.</summary>
    [Benchmark(Baseline = true)]
    public int RollupDeltasFor512RecordsFoldedTwice() =>
        LedgerRollup.Aggregate(_batch, LedgerRollup.Hour).Count + LedgerRollup.Aggregate(_batch, LedgerRollup.Day).Count;
}
