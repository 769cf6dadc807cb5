using Bursar.Core.Advisor;
using Bursar.Core.Context;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Routing;

namespace Bursar.Core.Tests;

/// <summary>
/// The what-if tighter-context step per run: a sliding window replayed on a run's token series with the compaction stage's own
/// cache-aware step decision (<see cref="Compactor.Boundary"/>), and the calls re-priced, on hand-built series worked out by hand.
/// </summary>
public sealed class CompactionReplayTests
{
    private static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());
    private static readonly DateTimeOffset T0 = new(2026, 12, 3, 12, 0, 0, TimeSpan.Zero);

    /// <summary>gpt-4o: a cached token reads at 0.5x the input rate, an uncached one is written at the input rate.</summary>
    private static readonly CacheRates Gpt4o = new(0.5, 1.0);

    /// <summary>KeepTurns 1, no trigger, cache-aware over 5 expected turns.</summary>
    private static CompactionPolicy Window(int keep = 1) => new() { Strategy = CompactionPolicy.SlidingWindow, KeepTurns = keep, TriggerTokens = 0 };

    /// <summary>
    /// Six calls, each a new turn (no tool calls), after a 1,000-token fixed prefix (500 of it the system prompt): turns of 20, 400, 50,
    /// 50, 50 and 50 tokens; each call reads its predecessor's prompt from the cache. With a 10-token header per replaced message:
    /// </summary>
    private static readonly long[] Turns = [20, 400, 50, 50, 50, 50];

    private static RunCall[] Series()
    {
        var calls = new RunCall[Turns.Length];
        long total = 1000, cached = 1000;
        for (var i = 0; i < Turns.Length; i++)
        {
            total += Turns[i];
            calls[i] = new RunCall(total, cached, 0, ContinuesTurn: false);
            cached = total;
        }
        return calls;
    }

    [Fact]
    public void A_run_with_no_more_turns_than_the_window_keeps_is_not_compacted()
    {
        // three turns, KeepTurns 3: nothing older than the kept turns
        var calls = Series()[..3];
        Assert.All(CompactionReplay.Run(calls, Window(keep: 3), Gpt4o, 1000, 500, headerTokens: 10), c => Assert.Equal(new ReplayedCall(0, false, c.CachedTokens), c));
        Assert.Equal([0, 0, 0], CompactionReplay.Run(calls, Window(keep: 3), Gpt4o, 1000, 500, 10).Select(c => c.TokensRemoved));
        // calls of one turn (each carries the previous call's tool results) are one turn however many there are
        var oneTurn = Series().Select((c, i) => c with { ContinuesTurn = i > 0 }).ToArray();
        Assert.All(CompactionReplay.Run(oneTurn, Window(), Gpt4o, 1000, 500, 10), c => Assert.Equal(0, c.TokensRemoved));
    }

    [Fact]
    public void A_long_run_steps_only_when_the_step_pays_for_writing_the_cache_again_and_then_holds_its_boundary()
    {
        var replay = CompactionReplay.Run(Series(), Window(), Gpt4o, 1000, 500, headerTokens: 10);
        // call 2: replacing turn 0 saves 20 - 10 = 10 tokens, read at 0.5x over 5 turns = 25, against re-writing turns 0-1 less the
        //   saving (420 - 10 = 410) at the write premium 0.5x = 205: no step
        // call 3: replacing turns 0-1 saves 10 + 390 = 400: 400 x 0.5 x 5 = 1,000 >= (470 - 400) x 0.5 = 35: the boundary steps; only
        //   the fixed prefix (1,000) is still read from the cache
        // calls 4-5: the next step (turn 2, 40 tokens: 100 vs (520 - 40) x 0.5 = 240, then 80: 200 vs 245) does not pay: the boundary
        //   holds and the compacted prefix is read from the cache (the previous prompt less the 400 removed)
        Assert.Equal(
            [new(0, false, 1000), new(0, false, 1020), new(0, false, 1420), new(400, true, 1000), new(400, false, 1120), new(400, false, 1170)],
            replay);
    }

    [Fact]
    public void The_ladder_re_prices_each_call_of_a_run_with_what_its_compaction_would_have_sent_and_read_from_the_cache()
    {
        var calls = Series();
        var records = calls.Select((c, i) => Row($"run-long-{i}", "long", i, c)).ToList();
        var routes = new RoutingOptions { Routes = [new() { Name = "agents", Feature = "agent", Compaction = Window() }] };
        var ladder = WhatIfSimulator.Run(records, Catalog, new WhatIfAssumptions { Routes = routes, ContextHeaderTokens = 10 }, T0, T0.AddDays(1));
        var step = ladder.Steps[^1];
        Assert.Equal("tighter context", step.Lever);
        // gpt-4o: $2.50 input, $1.25 cached per million tokens
        // call 3 (moved): 50 uncached + 1,470 cached = $0.0019625 -> 120 uncached + 1,000 cached = $0.00155: saves $0.0004125
        // call 4: 50 + 1,520 = $0.002025 -> 50 + 1,120 = $0.001525: saves $0.0005; call 5 likewise $0.0005
        Assert.Equal(0.0014125m, ladder.Steps[^2].WindowCost - step.WindowCost);
        Assert.Contains("6 calls compacted with sliding-window", step.Assumption);
        Assert.Contains("simulated per run on 1 runs", step.Assumption);
        Assert.Contains("at most 10 tokens per replaced message, given", step.Assumption);

        // a run too short to compact saves nothing; the same calls without a run id take the flat share instead
        var short3 = calls[..3].Select((c, i) => Row($"run-short-{i}", "short", i, c)).ToList();
        var shortLadder = WhatIfSimulator.Run(short3, Catalog, new WhatIfAssumptions { Routes = routes }, T0, T0.AddDays(1));
        Assert.Equal(shortLadder.Steps[^2].WindowCost, shortLadder.Steps[^1].WindowCost);
        Assert.Contains("simulated per run on 1 runs", shortLadder.Steps[^1].Assumption);
        var noRun = short3.Select(r => r with { RunId = null }).ToList();
        var flat = WhatIfSimulator.Run(noRun, Catalog, new WhatIfAssumptions { Routes = routes }, T0, T0.AddDays(1)).Steps;
        Assert.Equal(Math.Round(flat[^2].WindowCost * WhatIfAssumptions.DefaultContextReductions[CompactionPolicy.SlidingWindow], 10), Math.Round(flat[^2].WindowCost - flat[^1].WindowCost, 10));
        Assert.Contains("measured on recorded agent conversations", flat[^1].Assumption);
    }

    [Fact]
    public void The_header_size_is_fitted_on_runs_the_stage_already_compacted()
    {
        // the stage removed what a 10-token header would: the fit finds 10
        var calls = Series();
        var removed = CompactionReplay.Run(calls, Window(), Gpt4o, 1000, 500, 10).Select(c => c.TokensRemoved).ToArray();
        Assert.Equal(10, CompactionReplay.FitHeaderTokens([new CompactedRun(calls, removed, Window(), Gpt4o, 1000, 500)]));
        Assert.Null(CompactionReplay.FitHeaderTokens([new CompactedRun(calls, new long[calls.Length], Window(), Gpt4o, 1000, 500)]));
    }

    private static LedgerRecord Row(string id, string run, int i, RunCall c) => new()
    {
        Id = id, Timestamp = T0.AddSeconds(i), Dialect = "openai", Provider = "openai", RequestedModel = "gpt-4o", ServedModel = "gpt-4o", Feature = "agent",
        RunId = run, InputTokens = c.InputTokens - c.CachedTokens, CacheReadTokens = c.CachedTokens, OutputTokens = 0, PrefixTokens = 500,
        FinishReason = "stop", Outcome = "ok", Priced = true,
    };
}
