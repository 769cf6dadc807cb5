using System.Diagnostics.Metrics;
using Bursar.Core.Attribution;
using Bursar.Core.Ledger;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using Bursar.Providers.Dialects;
using Microsoft.Extensions.Logging;

namespace Bursar.Gateway.Metering;

/// <summary>Everything known about one call when it ends, turned into its ledger record.</summary>
public sealed class CallContext
{
    public required string Id { get; init; }
    public required DateTimeOffset Started { get; init; }
    public required long StartTimestamp { get; init; }
    public required Dialect Dialect { get; init; }
    public CallAttribution Attribution { get; set; } = CallAttribution.None;
    public string? RequestedModel { get; set; }
    public string? Provider { get; set; }
    public bool Streamed { get; set; }
    public CallSummary Summary { get; } = new();
    public int StatusCode { get; set; }
    public string Outcome { get; set; } = "ok";
    public string? ErrorType { get; set; }
    public string? ErrorMessage { get; set; }
    public string? UpstreamRequestId { get; set; }
    public string? RoutingReason { get; set; }
    /// <summary>Set when the exact response cache answered: the call cost nothing and saved what the original cost.</summary>
    public Bursar.Core.Caching.CachedResponse? CacheHit { get; set; }
    /// <summary>Bursar placed the prompt-cache breakpoints of this call (the caller had none): the net caching saving is Bursar's.</summary>
    public bool PromptCachePlaced { get; set; }
    public string? VolatilePrefix { get; set; }
}

/// <summary>Prices a finished call, writes its ledger record, and counts it in the <c>Bursar.Gateway</c> meter.</summary>
public sealed partial class CallMeter
{
    public const string MeterName = "Bursar.Gateway";

    private readonly Func<PriceCatalog> _catalog;
    private readonly LedgerWriter _ledger;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Counter<long> _calls;
    private readonly Counter<long> _unpriced;
    private readonly Counter<double> _cost;
    private readonly Counter<long> _tokens;

    public CallMeter(Func<PriceCatalog> catalog, LedgerWriter ledger, TimeProvider time, ILogger<CallMeter> logger, IMeterFactory meters)
    {
        _catalog = catalog;
        _ledger = ledger;
        _time = time;
        _logger = logger;
        var m = meters.Create(MeterName);
        _calls = m.CreateCounter<long>("bursar.calls", description: "Calls through the gateway, by outcome");
        _unpriced = m.CreateCounter<long>("bursar.calls.unpriced", description: "Calls whose served model has no price (cost unknown, not $0)");
        _cost = m.CreateCounter<double>("bursar.cost", unit: "USD", description: "Metered spend");
        _tokens = m.CreateCounter<long>("gen_ai.client.token.usage", unit: "{token}", description: "Tokens by class");
    }

    public long UnpricedCalls => Interlocked.Read(ref _unpricedCount);
    private long _unpricedCount;

    /// <summary>Prices the call, counts it, and enqueues its ledger record (after <paramref name="complete"/> may add to it).</summary>
    public LedgerRecord Finish(CallContext c, Func<LedgerRecord, LedgerRecord>? complete = null)
    {
        var record = Build(c);
        if (complete is not null) record = complete(record);
        _ledger.Enqueue(record);
        return record;
    }

    /// <summary>The call's cost from its usage so far (null when its model is unpriced).</summary>
    public decimal? CostOf(CallContext c)
    {
        var model = c.Summary.Model ?? c.RequestedModel;
        if (model is null) return null;
        var price = _catalog().Find(model).Price ?? (c.RequestedModel is null ? null : _catalog().Find(c.RequestedModel).Price);
        return price is null ? null : CostCalculator.Compute(price, c.Summary.Usage).Total;
    }

    public LedgerRecord Build(CallContext c)
    {
        var s = c.Summary;
        var served = s.Model ?? c.RequestedModel;
        var usage = s.Usage;
        string? estimated = null;
        if (s.UsageSeen && !s.UsageFinal && s.Deltas > usage.OutputTokens)
        {
            // the stream ended before its final usage: bill at least one token per delta that passed through
            usage = usage with { OutputTokens = s.Deltas };
            estimated = $"output tokens estimated ({s.Deltas} deltas): the stream ended before the provider's final usage";
        }
        decimal? cost = null;
        decimal promptCacheSaving = 0m;
        var priced = false;
        if (served is not null)
        {
            var lookup = _catalog().Find(served);
            if (lookup.Price is null && c.RequestedModel is not null && c.RequestedModel != served) lookup = _catalog().Find(c.RequestedModel);
            if (lookup.Price is { } price)
            {
                priced = true;
                cost = CostCalculator.Compute(price, usage).Total;
                // prompt caching credits only what it shows: the read discount minus the write premium, when Bursar placed the marks
                if (c.PromptCachePlaced) promptCacheSaving = CostCalculator.ComputeUncached(price, usage) - cost.Value;
            }
            else if (!usage.IsEmpty)
            {
                Interlocked.Increment(ref _unpricedCount);
                _unpriced.Add(1, new KeyValuePair<string, object?>("model", served));
                LogUnpriced(_logger, served, c.Id, c.Attribution.KeyId);
            }
        }
        // a call that used no tokens cost nothing, priced or not
        if (usage.IsEmpty && cost is null)
        {
            cost = 0m;
            priced = true;
        }
        var elapsed = _time.GetElapsedTime(c.StartTimestamp);
        double? ttft = s.FirstTokenTimestamp is { } ft ? _time.GetElapsedTime(c.StartTimestamp, ft).TotalMilliseconds : null;
        var record = new LedgerRecord
        {
            Id = c.Id,
            Timestamp = c.Started,
            KeyId = c.Attribution.KeyId,
            Team = c.Attribution.Team,
            Customer = c.Attribution.Customer,
            Feature = c.Attribution.Feature,
            Task = c.Attribution.Task,
            Template = c.Attribution.Template,
            RunId = c.Attribution.RunId,
            Dialect = c.Dialect.Name(),
            Provider = c.Provider,
            RequestedModel = c.RequestedModel,
            ServedModel = served,
            Streamed = c.Streamed,
            InputTokens = usage.InputTokens,
            CacheReadTokens = usage.CacheReadTokens,
            CacheWrite5mTokens = usage.CacheWrite5mTokens,
            CacheWrite1hTokens = usage.CacheWrite1hTokens,
            OutputTokens = usage.OutputTokens,
            ReasoningTokens = usage.ReasoningTokens,
            Priced = priced,
            Cost = cost,
            CounterfactualCost = cost + (c.CacheHit?.CostUsd ?? 0m) + promptCacheSaving,
            SavingResponseCache = c.CacheHit?.CostUsd ?? 0m,
            SavingPromptCache = promptCacheSaving,
            LatencyMs = elapsed.TotalMilliseconds,
            TimeToFirstTokenMs = ttft,
            Outcome = c.Outcome,
            StatusCode = c.StatusCode,
            ErrorType = c.ErrorType ?? s.ErrorType,
            ErrorMessage = c.ErrorMessage ?? s.ErrorMessage ?? estimated,
            RoutingReason = c.RoutingReason,
            VolatilePrefix = c.VolatilePrefix,
            FinishReason = s.FinishReason,
            UpstreamRequestId = c.UpstreamRequestId ?? s.ResponseId,
        };
        var outcome = new KeyValuePair<string, object?>("outcome", c.Outcome);
        _calls.Add(1, outcome);
        if (cost is { } usd) _cost.Add((double)usd, new KeyValuePair<string, object?>("model", served));
        if (!usage.IsEmpty)
        {
            _tokens.Add(usage.InputTokens, new KeyValuePair<string, object?>("gen_ai.token.type", "input"));
            _tokens.Add(usage.CacheReadTokens, new KeyValuePair<string, object?>("gen_ai.token.type", "cache_read"));
            _tokens.Add(usage.CacheWriteTokens, new KeyValuePair<string, object?>("gen_ai.token.type", "cache_write"));
            _tokens.Add(usage.OutputTokens, new KeyValuePair<string, object?>("gen_ai.token.type", "output"));
        }
        return record;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "UNPRICED model '{Model}' (call {CallId}, key {KeyId}): cost recorded as unknown, not $0. Add it with `bursar prices import` or Bursar:Prices.")]
    private static partial void LogUnpriced(ILogger logger, string model, string callId, string? keyId);
}
