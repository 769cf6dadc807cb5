using System.Globalization;
using System.Text;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Reporting;
using Bursar.Core.Routing;
using Bursar.Core.Usage;

namespace Bursar.Core.Advisor;

/// <summary>
/// The stated, adjustable assumptions of a what-if replay. Defaults follow <c>LEVERS.md</c>.
/// </summary>
public sealed record WhatIfAssumptions
{
    /// <summary>Output caps: <c>max_tokens</c> per task = this percentile of observed output tokens (default p95)...</summary>
    public double OutputCapPercentile { get; init; } = 0.95;
    /// <summary>...plus this margin (default 10%).</summary>
    public double OutputCapMargin { get; init; } = 0.10;
    /// <summary>A task needs at least this many calls in the window before a cap is learned from it (default 20).</summary>
    public int MinCallsForCap { get; init; } = 20;

    /// <summary>Tier routing by task tag: task -> tier (small, mid, top). Default: the table in LEVERS.md.</summary>
    public IReadOnlyDictionary<string, string> TaskTiers { get; init; } = TierLadders.DefaultTaskTiers;
    /// <summary>When set, these route policies decide the routed model instead of the tier table (what switching them on would do).</summary>
    public RoutingOptions? Routes { get; init; }

    /// <summary>Prompt caching: a prefix re-sent within this interval is read from the cache (default 5 minutes, Anthropic's default TTL).</summary>
    public TimeSpan CacheTtl { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>Batch: tasks that can wait for the provider's batch API (50% off). Default: tasks named batch, nightly, offline, eval, backfill or report.</summary>
    public IReadOnlySet<string> DeferrableTasks { get; init; } = new HashSet<string>(["batch", "nightly", "offline", "eval", "backfill", "report"], StringComparer.OrdinalIgnoreCase);

    /// <summary>Tighter context: this share of the uncached input of long prompts is trimmed (default 20%, the low end of LEVERS.md's 20-40%).</summary>
    public decimal ContextTrimShare { get; init; } = 0.20m;
    /// <summary>...on calls with at least this many uncached input tokens (default 2,000).</summary>
    public long ContextTrimMinTokens { get; init; } = 2_000;

    /// <summary>
    /// When <see cref="Routes"/> turn compaction on: the share of a call's cost each strategy removes, by strategy name. A strategy
    /// missing here is simulated per run on the calls of agent runs, where it can be from tokens (a sliding window,
    /// <see cref="Context.CompactionReplay"/>); on other calls it takes the share measured on the ledger's own rows of routes where it is
    /// already on (their credited compaction saving over what they would have cost), else <see cref="DefaultContextReductions"/>.
    /// </summary>
    public IReadOnlyDictionary<string, decimal> ContextReductions { get; init; } = new Dictionary<string, decimal>();

    /// <summary>
    /// When a sliding window is replayed per run (<see cref="Context.CompactionReplay"/>): the tokens its header keeps of each message
    /// it replaces, at most. Null (default): fitted on the ledger's runs a sliding-window route already compacted, else
    /// <see cref="Context.CompactionReplay.DefaultHeaderTokens"/> (measured on tau-bench airline conversations).
    /// </summary>
    public long? ContextHeaderTokens { get; init; }

    /// <summary>
    /// The cost change each strategy made on 200 recorded tau-bench airline agent conversations (gpt-4o, the Simulator's prompt caching,
    /// KeepTurns 3, cache-aware; `bursar eval compaction`, bench/RESULTS.md, 2026-12-02): the fallback when the ledger has no rows of it.
    /// </summary>
    public static readonly IReadOnlyDictionary<string, decimal> DefaultContextReductions = new Dictionary<string, decimal>
    {
        [Context.CompactionPolicy.PruneToolResults] = 0.009m, [Context.CompactionPolicy.SlidingWindow] = 0.028m,
        [Context.CompactionPolicy.Summarize] = 0.018m, [Context.CompactionPolicy.Retrieval] = 0.012m,
    };

    /// <summary>Below this many requests a day the advisor says optimization is not worth the engineering time yet.</summary>
    public double WorthItRequestsPerDay { get; init; } = 1_000;
}

/// <summary>One rung of the ladder: the monthly cost once this lever is on (with every rung above it).</summary>
public sealed record WhatIfStep(string Lever, decimal WindowCost, decimal MonthlyCost, decimal StepSaving, decimal CumulativeSaving, decimal CumulativeShare, string Assumption);

/// <summary>The lever ladder: baseline, then each lever in the recommended order, with what each assumed.</summary>
public sealed record WhatIfLadder(decimal BaselineWindowCost, decimal BaselineMonthly, IReadOnlyList<WhatIfStep> Steps, double RequestsPerDay, double WindowDays, long Calls, long UnpricedCalls, bool WorthIt, string Source)
{
    /// <summary>Less traffic than this is too short a window to extrapolate a day's or a month's volume from.</summary>
    public const double MinDaysToExtrapolate = 1.0;

    /// <summary>The window holds under 24 h of traffic: requests/day and the monthly figures assume its rate held all day, every day.</summary>
    public bool TooShortToExtrapolate => WindowDays < MinDaysToExtrapolate;

    /// <summary>What prompt caching already saved in the window (in the baseline), by the rule every report uses.</summary>
    public decimal PromptCacheAlreadySaved { get; init; }

    public string ToTable()
    {
        var sb = new StringBuilder();
        var span = WindowDays >= 1 ? $"{WindowDays:0.##} days" : $"{WindowDays * 24 * 60:0} minutes";
        sb.AppendLine($"What-if ladder ({Source}): {Calls:N0} calls over {span}, {RequestsPerDay:N0} requests/day, scaled to 30 days.");
        if (TooShortToExtrapolate)
            sb.AppendLine($"NOTE: {span} of traffic is too short to extrapolate (under 24 h): the requests/day and monthly figures ASSUME this window's rate ({Calls:N0} calls in {span}) held all day, every day, with no daily cycle. Meter at least a full day (a week is better) before trusting them.");
        if (!WorthIt && !TooShortToExtrapolate)
            sb.AppendLine($"NOTE: about {RequestsPerDay:N0} requests a day is below ~1,000: engineering time outweighs token savings. Meter first, optimize later.");
        if (UnpricedCalls > 0) sb.AppendLine($"WARNING: {UnpricedCalls:N0} calls use unpriced models and are left out (their cost is unknown, not $0).");
        sb.AppendLine();
        var rows = new List<string[]> { new[] { "step", "monthly USD", "step saves", "cumulative", "saved" } };
        rows.Add(["baseline", Money(BaselineMonthly), "", "", ""]);
        foreach (var s in Steps)
            rows.Add([s.Lever, Money(s.MonthlyCost), Money(s.StepSaving), Money(s.CumulativeSaving), (s.CumulativeShare * 100).ToString("0", CultureInfo.InvariantCulture) + "%"]);
        var widths = Enumerable.Range(0, 5).Select(i => rows.Max(r => r[i].Length)).ToArray();
        foreach (var (r, i) in rows.Select((r, i) => (r, i)))
        {
            sb.AppendLine(string.Join("  ", r.Select((c, j) => j == 0 ? c.PadRight(widths[j]) : c.PadLeft(widths[j]))));
            if (i == 0) sb.AppendLine(string.Join("  ", widths.Select(w => new string('-', w))));
        }
        sb.AppendLine();
        sb.AppendLine("Assumptions (change them with the options of `bursar simulate`):");
        foreach (var s in Steps) sb.AppendLine($"  {s.Lever}: {s.Assumption}");
        return sb.ToString();
    }

    private static string Money(decimal d) => "$" + d.ToString("#,0.00", CultureInfo.InvariantCulture);
}

/// <summary>
/// Replays ledger records through the levers one at a time, in the recommended order (output caps, tier routing, prompt caching,
/// batch, tighter context), re-pricing every call from the catalog after each, and reports the ladder.
/// </summary>
public static class WhatIfSimulator
{
    public static readonly string[] Order = ["output caps", "tier routing", "prompt caching", "batch", "tighter context"];

    private sealed class Call
    {
        public required LedgerRecord Source { get; init; }
        public required string Task { get; init; }
        public required string Model { get; set; }
        public ModelPrice? Price { get; set; }
        public TokenUsage Usage { get; set; }
        public bool Batch { get; set; }
        public bool Free { get; init; }
        /// <summary>The share of this call's cost a compaction route would remove (the tighter-context step).</summary>
        public decimal ContextShare { get; set; }
    }

    public static WhatIfLadder Run(IReadOnlyList<LedgerRecord> records, PriceCatalog catalog, WhatIfAssumptions a, DateTimeOffset from, DateTimeOffset to, string source = "ledger")
    {
        var calls = new List<Call>();
        long unpriced = 0;
        foreach (var r in records.OrderBy(r => r.Timestamp))
        {
            var model = r.ServedModel ?? r.RequestedModel;
            var price = model is null ? null : catalog.Find(model).Price;
            if (price is null && !r.Usage.IsEmpty) { unpriced++; continue; }
            calls.Add(new Call
            {
                Source = r, Task = r.Task ?? r.Feature ?? LedgerRollup.None, Model = model ?? "", Price = price, Usage = r.Usage, Batch = r.Batch,
                // an answer from Bursar's response cache cost nothing and has nothing left to save
                Free = r.Provider is "bursar-cache" or "bursar-semantic-cache" || price is null,
            });
        }
        // the window actually covered: from the first call (or the window start, if later) to the window end
        var start = calls.Count > 0 && calls[0].Source.Timestamp > from ? calls[0].Source.Timestamp : from;
        var days = Math.Max((to - start).TotalDays, 1.0 / 1440); // at least a minute; under a day the ladder says it is too short to extrapolate
        var scale = (decimal)(30.0 / days);
        decimal Cost() => calls.Where(c => !c.Free).Sum(c => CostCalculator.Compute(c.Price!, c.Usage, c.Batch).Total * (1 - c.ContextShare));

        var baseline = Cost();
        var steps = new List<WhatIfStep>();
        var previous = baseline;
        void Step(string lever, string assumption)
        {
            var cost = Cost();
            steps.Add(new WhatIfStep(lever, cost, cost * scale, (previous - cost) * scale, (baseline - cost) * scale, baseline == 0 ? 0 : (baseline - cost) / baseline, assumption));
            previous = cost;
        }

        Step(Order[0], OutputCaps(calls, a));
        Step(Order[1], Routing(calls, catalog, a));
        var alreadySaved = calls.Where(c => !c.Free).Sum(c => Bursar.Core.Reporting.CacheReport.PromptCacheSavingOf(c.Source, catalog));
        Step(Order[2], PromptCaching(calls, a, alreadySaved));
        Step(Order[3], Batch(calls, a));
        Step(Order[4], Context(calls, a));
        var perDay = calls.Count / days;
        return new WhatIfLadder(baseline, baseline * scale, steps, perDay, days, calls.Count, unpriced, perDay >= a.WorthItRequestsPerDay, source) { PromptCacheAlreadySaved = alreadySaved };
    }

    /// <summary>The learned cap per task: ceil(p95 x 1.1) of observed output tokens; null when the task has too few calls.</summary>
    public static Dictionary<string, int> LearnCaps(IEnumerable<LedgerRecord> records, WhatIfAssumptions a) =>
        records.Where(r => r.Outcome == "ok" && r.OutputTokens > 0).GroupBy(r => r.Task ?? r.Feature ?? LedgerRollup.None)
            .Where(g => g.Count() >= a.MinCallsForCap)
            .ToDictionary(g => g.Key, g => Bursar.Core.Routing.OutputCaps.Learn(g.Select(r => r.OutputTokens), a.OutputCapPercentile, a.OutputCapMargin));

    private static string OutputCaps(List<Call> calls, WhatIfAssumptions a)
    {
        var caps = LearnCaps(calls.Where(c => !c.Free).Select(c => c.Source), a);
        long cut = 0;
        foreach (var c in calls)
        {
            if (c.Free || !caps.TryGetValue(c.Task, out var cap) || c.Usage.OutputTokens <= cap) continue;
            c.Usage = c.Usage with { OutputTokens = cap, ReasoningTokens = Math.Min(c.Usage.ReasoningTokens, cap) };
            cut++;
        }
        if (caps.Count == 0) return $"no task has {a.MinCallsForCap}+ calls to learn a cap from";
        return $"max_tokens per task = p{a.OutputCapPercentile * 100:0} + {Pct(a.OutputCapMargin)} of observed output ({string.Join(", ", caps.OrderBy(k => k.Key, StringComparer.Ordinal).Take(6).Select(k => $"{k.Key} {k.Value}"))}{(caps.Count > 6 ? ", ..." : "")}); {cut:N0} calls would be cut short";
    }

    private static string Routing(List<Call> calls, PriceCatalog catalog, WhatIfAssumptions a)
    {
        var moved = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var c in calls)
        {
            if (c.Free) continue;
            string? target;
            if (a.Routes is { } routes)
            {
                var r = c.Source;
                var route = routes.Match(new Attribution.CallAttribution { Task = r.Task, Feature = r.Feature, Team = r.Team, KeyId = r.KeyId, Customer = r.Customer },
                    r.RequestedModel ?? c.Model, r.Usage.TotalInputTokens);
                // a ladder sends calls to its rungs in the shares its calibration gives: each call lands at a fixed, uniform place in the score distribution
                target = route is { Ladder.Length: > 0 } ? route.Rung(UniformOf(r.Id)).Model
                    : route?.Tier is { } tier ? TierLadders.Rung(c.Model, tier) : route?.Model;
            }
            else target = a.TaskTiers.TryGetValue(c.Task, out var tier) ? TierLadders.Rung(c.Model, tier) : null;
            if (target is null || target == c.Model || catalog.Find(target).Price is not { } price) continue;
            moved[$"{c.Task} -> {target}"] = moved.GetValueOrDefault($"{c.Task} -> {target}") + 1;
            c.Model = target;
            c.Price = price;
        }
        var total = calls.Count(c => !c.Free);
        if (moved.Count == 0) return a.Routes is null ? "no tagged task maps to a cheaper tier (tag calls with x-bursar-task: classification, extraction, summarization...)" : "no route policy moves a call";
        var share = total == 0 ? 0 : (double)moved.Values.Sum() / total;
        return $"{Pct(share)} of calls move to a cheaper tier ({string.Join(", ", moved.OrderByDescending(m => m.Value).Take(5).Select(m => $"{m.Key}: {m.Value:N0}"))}); same tokens, the new model's price"
            + (a.Routes is null ? "; untagged calls stay on their model" : " (configured route policies)");
    }

    private static double UniformOf(string id) => System.IO.Hashing.XxHash64.HashToUInt64(System.Text.Encoding.UTF8.GetBytes(id)) / (double)ulong.MaxValue;

    private static string PromptCaching(List<Call> calls, WhatIfAssumptions a, decimal alreadySaved)
    {
        var already = calls.Where(c => !c.Free && (c.Usage.CacheReadTokens > 0 || c.Usage.CacheWriteTokens > 0)).ToArray();
        var alreadyText = already.Length == 0 ? ""
            : $"already caching: {already.Count(c => c.Usage.CacheReadTokens > 0):N0} calls read {already.Sum(c => c.Usage.CacheReadTokens):N0} cached tokens in the window, saving {Bursar.Core.Reporting.SpendReport.Money(alreadySaved)} (in the baseline already); ";
        var lastSeen = new Dictionary<(string, string), DateTimeOffset>();
        long reads = 0, writes = 0;
        foreach (var c in calls)
        {
            var r = c.Source;
            if (c.Free || r.PrefixHash is null || c.Usage.CacheReadTokens > 0 || c.Usage.CacheWriteTokens > 0) continue;
            var prefix = Math.Min(r.PrefixTokens, c.Usage.InputTokens);
            var minimum = c.Price!.PromptCacheMinTokens ?? 1024;
            if (prefix < minimum) continue;
            var key = (c.Model, r.PrefixHash);
            var warm = lastSeen.TryGetValue(key, out var t) && r.Timestamp - t <= a.CacheTtl;
            lastSeen[key] = r.Timestamp;
            var explicitWrites = c.Price.Rates.CacheWrite5m is not null; // Anthropic-style: pay to write; OpenAI-style: automatic, 128-token steps
            if (warm)
            {
                var cached = explicitWrites ? prefix : prefix / 128 * 128;
                c.Usage = c.Usage with { InputTokens = c.Usage.InputTokens - cached, CacheReadTokens = cached };
                reads++;
            }
            else if (explicitWrites)
            {
                c.Usage = c.Usage with { InputTokens = c.Usage.InputTokens - prefix, CacheWrite5mTokens = prefix };
                writes++;
            }
        }
        return reads + writes == 0
            ? alreadyText + (already.Length > 0 ? "no further repeated prefix to cache" : "no repeated prefix long enough to cache (prefixes are recorded for prompts of 1,024+ tokens)")
            : alreadyText + $"system prompts re-sent within {a.CacheTtl.TotalMinutes:0} min are read from the cache: {reads:N0} reads, {writes:N0} writes (writes cost 1.25x, reads 0.1x on Anthropic; OpenAI reads at its cached rate in 128-token steps)";
    }

    private static string Batch(List<Call> calls, WhatIfAssumptions a)
    {
        long n = 0;
        foreach (var c in calls)
            if (!c.Free && !c.Batch && a.DeferrableTasks.Contains(c.Task)) { c.Batch = true; n++; }
        var total = calls.Count(c => !c.Free);
        return $"tasks tagged {string.Join(", ", a.DeferrableTasks.Order(StringComparer.Ordinal))} can wait for the batch API at 50% off: {Pct(total == 0 ? 0 : (double)n / total)} of calls";
    }

    private static string Context(List<Call> calls, WhatIfAssumptions a)
    {
        if (a.Routes is { } routes && routes.Routes.Any(r => r.Compaction is not null)) return RouteContext(calls, routes, a);
        long n = 0;
        foreach (var c in calls)
        {
            if (c.Free || c.Usage.InputTokens < a.ContextTrimMinTokens) continue;
            c.Usage = c.Usage with { InputTokens = c.Usage.InputTokens - (long)Math.Round(c.Usage.InputTokens * a.ContextTrimShare) };
            n++;
        }
        return $"{Pct((double)a.ContextTrimShare)} of the uncached input trimmed (sliding window, pruned tool output) on the {n:N0} calls with {a.ContextTrimMinTokens:N0}+ uncached input tokens";
    }

    /// <summary>
    /// The tighter-context step when route policies turn compaction on. The calls of an agent run (a run id on the ledger) a sliding-window
    /// route would take are replayed per run: the stage's own cache-aware step decision on the run's token series, each call re-priced with
    /// the input it would have sent and read from the cache (what compaction saves is dominated by a few long runs, so a share measured on
    /// other conversations does not carry), unless a share is given for the strategy. Every other call a compaction route would take loses the share of its cost its strategy
    /// removes, as measured (the assumption's, else the ledger's rows already on such a route, else the recorded trajectories'); calls
    /// already compacted in the window are in the baseline and have nothing left to save here.
    /// </summary>
    private static string RouteContext(List<Call> calls, RoutingOptions routes, WhatIfAssumptions a)
    {
        var strategyOfRoute = routes.Routes.Where(r => r.Compaction is not null).ToDictionary(r => r.Name, r => r.Compaction!.Strategy, StringComparer.Ordinal);
        string? AlreadyOn(LedgerRecord r) => r.ContextStrategy is { } s && s != "compress" ? s.Replace("compress+", "", StringComparison.Ordinal)
            : r.Route is { } name && strategyOfRoute.TryGetValue(name, out var st) ? st : null;
        // measured on the ledger: per strategy, the credited saving over what those calls would have cost without it
        var measured = new Dictionary<string, (decimal Saved, decimal Without, long Calls)>(StringComparer.Ordinal);
        foreach (var c in calls)
        {
            if (c.Free || c.Source.Cost is not { } cost || AlreadyOn(c.Source) is not { } s) continue;
            var m = measured.GetValueOrDefault(s);
            measured[s] = (m.Saved + c.Source.SavingCompaction, m.Without + cost + c.Source.SavingCompaction, m.Calls + 1);
        }
        (decimal Share, string From) ShareOf(string s) =>
            a.ContextReductions.TryGetValue(s, out var given) ? (given, "given")
            : measured.TryGetValue(s, out var m) && m.Without > 0 ? (m.Saved / m.Without, $"measured on {m.Calls:N0} ledger calls already on such a route")
            : (WhatIfAssumptions.DefaultContextReductions.GetValueOrDefault(s), "measured on recorded agent conversations");
        var moved = new Dictionary<string, long>(StringComparer.Ordinal);
        // calls of one agent run a route would compact with a strategy replayable from tokens: simulated per run, not a flat share
        // (unless a share for the strategy is given: measured on the team's own conversations, it is what the caller asked for)
        var runs = new Dictionary<(string Run, string Model), (Bursar.Core.Context.CompactionPolicy Policy, List<Call> Calls)>();
        foreach (var c in calls)
        {
            var r = c.Source;
            if (c.Free || AlreadyOn(r) is not null) continue;
            var route = routes.Match(new Attribution.CallAttribution { Task = r.Task, Feature = r.Feature, Team = r.Team, KeyId = r.KeyId, Customer = r.Customer },
                r.RequestedModel ?? c.Model, r.Usage.TotalInputTokens);
            if (route?.Compaction is not { } policy) continue;
            if (r.RunId is { Length: > 0 } run && Bursar.Core.Context.CompactionReplay.CanReplay(policy.Strategy) && !a.ContextReductions.ContainsKey(policy.Strategy))
            {
                var key = (run, c.Model);
                if (!runs.TryGetValue(key, out var list)) runs[key] = list = (policy, []);
                list.Calls.Add(c);
                continue;
            }
            c.ContextShare = Math.Clamp(ShareOf(policy.Strategy).Share, 0m, 1m);
            moved[policy.Strategy] = moved.GetValueOrDefault(policy.Strategy) + 1;
        }
        // the header share: fitted on the ledger's runs a sliding window already compacted, else the assumption's
        var fitted = runs.Count == 0 || a.ContextHeaderTokens is not null ? null : FitHeaderTokens(calls, routes);
        var header = a.ContextHeaderTokens ?? fitted?.Tokens ?? Bursar.Core.Context.CompactionReplay.DefaultHeaderTokens;
        var headerFrom = a.ContextHeaderTokens is not null ? "given" : fitted is { } f ? $"fitted on {f.Runs:N0} ledger runs already compacted" : "measured on recorded agent conversations";
        var replayed = Replay(runs.Values, header);
        if (moved.Count == 0 && replayed.Count == 0) return "no call of the window is on a compaction route that is not on already";
        return string.Join("; ", replayed.OrderBy(m => m.Key, StringComparer.Ordinal).Select(m =>
                $"{m.Value.Calls:N0} calls compacted with {m.Key}: {(m.Value.Before == 0 ? 0 : m.Value.Saved / m.Value.Before * 100).ToString("0.0", CultureInfo.InvariantCulture)}% of their cost "
                + $"(simulated per run on {m.Value.Runs:N0} runs: the stage's cache-aware step on each run's token series, a header of at most {header:N0} tokens per replaced message, {headerFrom})")
            .Concat(moved.OrderBy(m => m.Key, StringComparer.Ordinal).Select(m =>
        {
            var (share, from) = ShareOf(m.Key);
            return $"{m.Value:N0} calls compacted with {m.Key}: {(share * 100).ToString("0.0", CultureInfo.InvariantCulture)}% of their cost ({from})";
        })));
    }

    /// <summary>
    /// Each run replayed through its route's compaction (<see cref="Context.CompactionReplay"/>) and its calls re-priced with the input
    /// they would have sent and read from the cache; per strategy, the calls and runs replayed and their cost before and after.
    /// </summary>
    private static Dictionary<string, (long Calls, long Runs, decimal Before, decimal Saved)> Replay(IEnumerable<(Bursar.Core.Context.CompactionPolicy Policy, List<Call> Calls)> runs, long headerTokens)
    {
        var result = new Dictionary<string, (long Calls, long Runs, decimal Before, decimal Saved)>(StringComparer.Ordinal);
        var list = runs.ToList();
        // the fixed prefix (system prompt and tools) a run's first call reads from the cache another run wrote; a run that found it cold takes the largest seen on its model
        var warm = WarmPrefix(list.Select(r => r.Calls));
        foreach (var (policy, run) in list)
        {
            var first = run[0];
            var fixedTokens = FixedTokens(first, warm.GetValueOrDefault(first.Model));
            var series = Series(run, removed: false);
            var rates = Bursar.Core.Context.CacheRates.Of(first.Price!.Rates, first.Source.Dialect == "anthropic");
            var replay = Bursar.Core.Context.CompactionReplay.Run(series, policy, rates, fixedTokens, first.Source.PrefixTokens, headerTokens);
            decimal before = 0, after = 0;
            for (var i = 0; i < run.Count; i++)
            {
                var c = run[i];
                before += CostCalculator.Compute(c.Price!, c.Usage, c.Batch).Total;
                if (replay[i].TokensRemoved > 0) c.Usage = Compacted(c.Usage, replay[i], c.Price!.Rates.CacheWrite5m is not null);
                after += CostCalculator.Compute(c.Price!, c.Usage, c.Batch).Total;
            }
            var m = result.GetValueOrDefault(policy.Strategy);
            result[policy.Strategy] = (m.Calls + run.Count, m.Runs + 1, m.Before + before, m.Saved + before - after);
        }
        return result;
    }

    /// <summary>
    /// A run's token series as the replay reads it: each call's input (with <paramref name="removed"/>, plus what the stage already
    /// removed: its input before compaction), cache reads and output; a call after a tool call continues its predecessor's turn.
    /// </summary>
    private static Bursar.Core.Context.RunCall[] Series(List<Call> run, bool removed)
    {
        var series = new Bursar.Core.Context.RunCall[run.Count];
        for (var i = 0; i < run.Count; i++)
            series[i] = new Bursar.Core.Context.RunCall(run[i].Usage.TotalInputTokens + (removed ? run[i].Source.ContextTokensRemoved : 0), run[i].Usage.CacheReadTokens,
                run[i].Source.OutputTokens, ContinuesTurn: i > 0 && run[i - 1].Source.FinishReason is "tool_calls" or "tool_use");
        return series;
    }

    /// <summary>Per model, the largest prefix a run's first call read from the cache (what another run had written): the fixed prefix of a run that found it cold.</summary>
    private static Dictionary<string, long> WarmPrefix(IEnumerable<List<Call>> runs) =>
        runs.GroupBy(r => r[0].Model, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Max(r => r[0].Usage.CacheReadTokens), StringComparer.Ordinal);

    /// <summary>The fixed prefix (system prompt and tools) of a run: what its first call read from the cache another run wrote, else <paramref name="warm"/>, else its system prompt.</summary>
    private static long FixedTokens(Call first, long warm) =>
        first.Usage.CacheReadTokens > 0 ? first.Usage.CacheReadTokens : warm > 0 ? warm : first.Source.PrefixTokens;

    /// <summary>
    /// The header share fitted on the ledger's runs a sliding-window route already compacted (their input before compaction is what they
    /// sent plus what the stage removed); null when there are none.
    /// </summary>
    private static (long Tokens, int Runs)? FitHeaderTokens(List<Call> calls, RoutingOptions routes)
    {
        var policies = routes.Routes.Where(r => r.Compaction is { Strategy: Bursar.Core.Context.CompactionPolicy.SlidingWindow }).ToDictionary(r => r.Name, r => r.Compaction!, StringComparer.Ordinal);
        var runs = calls.Where(c => !c.Free && c.Source is { RunId.Length: > 0, Route: { } route } && policies.ContainsKey(route) && c.Source.ContextStrategy is null or Bursar.Core.Context.CompactionPolicy.SlidingWindow)
            .GroupBy(c => (c.Source.RunId!, c.Model)).Select(g => g.ToList()).ToList();
        var warm = WarmPrefix(runs);
        var compacted = runs.Select(run => new Bursar.Core.Context.CompactedRun(
            Series(run, removed: true),
            run.Select(c => c.Source.ContextTokensRemoved).ToArray(), policies[run[0].Source.Route!],
            Bursar.Core.Context.CacheRates.Of(run[0].Price!.Rates, run[0].Source.Dialect == "anthropic"), FixedTokens(run[0], warm[run[0].Model]), run[0].Source.PrefixTokens)).ToList();
        return Bursar.Core.Context.CompactionReplay.FitHeaderTokens(compacted) is { } share ? (share, compacted.Count) : null;
    }

    /// <summary>A call's usage with the input compaction would have removed, and the cache reads (and, where writes bill, writes) it would have made.</summary>
    private static TokenUsage Compacted(TokenUsage u, Bursar.Core.Context.ReplayedCall r, bool explicitWrites)
    {
        var total = Math.Max(0, u.TotalInputTokens - r.TokensRemoved);
        var read = Math.Clamp(r.CachedTokens, 0, total);
        if (!explicitWrites) return u with { InputTokens = total - read, CacheReadTokens = read, CacheWrite5mTokens = 0, CacheWrite1hTokens = 0 };
        var input = Math.Min(u.InputTokens, total - read);
        var written = total - read - input;
        return u.CacheWrite1hTokens > 0 && u.CacheWrite5mTokens == 0
            ? u with { InputTokens = input, CacheReadTokens = read, CacheWrite5mTokens = 0, CacheWrite1hTokens = written }
            : u with { InputTokens = input, CacheReadTokens = read, CacheWrite5mTokens = written, CacheWrite1hTokens = 0 };
    }

    private static string Pct(double share) => (share * 100).ToString("0", CultureInfo.InvariantCulture) + "%";

    /// <summary>
    /// The worked example of LEVERS.md, replayed from its stated assumptions. Its figures are shares of the bill: 10M tokens a day at
    /// list mid-tier prices is nearer $1,300 a month than $5,000, so the example is reproduced as each lever's mechanism applied to a $5,000 bill.
    /// </summary>
    public static WhatIfLadder Example()
    {
        (string Lever, decimal Share, string Assumption)[] levers =
        [
            ("output caps", 0.40m * 0.60m, "caps at p95 + 10% cut output tokens by 40% (600-token answers, long tail); output is 60% of the bill"),
            ("tier routing", 0.83m * (1 - 1m / 3), "83% of calls move from the mid tier to the small tier at 1/3 of the price"),
            ("prompt caching", 0.80m * 0.87m * (0.70m * 0.90m - 0.30m * 0.25m), "the 4,000-token system prompt is 87% of input, input is 80% of the bill; 70% of calls read it (0.1x), 30% write it (1.25x)"),
            ("batch", 0.30m * 0.50m, "the async 30% of calls go to the batch API at 50% off"),
            ("tighter context", 0.35m * 0.85m, "history trimmed by 35% of the remaining input; input is 85% of the bill"),
        ];
        const decimal baseline = 5000m;
        var steps = new List<WhatIfStep>();
        var cost = baseline;
        foreach (var (lever, share, assumption) in levers)
        {
            var next = cost * (1 - share);
            steps.Add(new WhatIfStep(lever, next, next, cost - next, baseline - next, (baseline - next) / baseline, $"{assumption} -> -{(share * 100).ToString("0.0", CultureInfo.InvariantCulture)}%"));
            cost = next;
        }
        // 10M tokens a day at ~5,200 tokens a call
        return new WhatIfLadder(baseline, baseline, steps, 10_000_000 / 5_200.0, 30, 30 * 10_000_000 / 5_200, 0, true, "LEVERS.md worked example: 10M tokens/day, mid-tier model, 4,000-token system prompt, 600-token outputs");
    }
}
