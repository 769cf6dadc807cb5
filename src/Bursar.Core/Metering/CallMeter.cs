using System.Diagnostics;
using System.Diagnostics.Metrics;
using Bursar.Core.Ledger;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Bursar.Core.Usage;
using Microsoft.Extensions.Logging;

namespace Bursar.Core.Metering;

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
    private readonly Counter<long> _usageUnreadable;
    private readonly Counter<double> _cost;
    private readonly Counter<double> _saved;
    private readonly Counter<long> _cacheHits;
    private readonly Counter<long> _refusals;
    private readonly Histogram<long> _tokens;
    private readonly Histogram<double> _duration;

    /// <summary>Spans named <c>chat {model}</c> with the GenAI semantic conventions' <c>gen_ai.usage.*</c> attributes.</summary>
    public static readonly System.Diagnostics.ActivitySource Spans = new(MeterName);

    public CallMeter(Func<PriceCatalog> catalog, LedgerWriter ledger, TimeProvider time, ILogger<CallMeter> logger, IMeterFactory meters)
    {
        _catalog = catalog;
        _ledger = ledger;
        _time = time;
        _logger = logger;
        var m = meters.Create(MeterName);
        _calls = m.CreateCounter<long>("bursar.calls", unit: "{call}", description: "Calls through the gateway, by outcome and served model");
        _unpriced = m.CreateCounter<long>("bursar.calls.unpriced", unit: "{call}", description: "Calls whose served model has no price (cost unknown, not $0)");
        _usageUnreadable = m.CreateCounter<long>("bursar.calls.usage_unreadable", unit: "{call}", description: "Upstream 200s whose usage Bursar could not read (recorded as upstream errors at an estimated cost, never $0)");
        _cost = m.CreateCounter<double>("bursar.cost", unit: "USD", description: "Metered spend by served model");
        _saved = m.CreateCounter<double>("bursar.saved", unit: "USD", description: "What each lever saved");
        _cacheHits = m.CreateCounter<long>("bursar.cache.hits", unit: "{call}", description: "Calls answered by the response cache, by kind (exact, semantic)");
        _refusals = m.CreateCounter<long>("bursar.refusals", unit: "{call}", description: "Calls refused by policy, by reason (budget_exceeded, rate_limit_exceeded, run caps)");
        // GenAI semantic conventions (client metrics)
        _tokens = m.CreateHistogram<long>("gen_ai.client.token.usage", unit: "{token}", description: "Tokens per call by gen_ai.token.type (input includes cache reads and writes)",
            advice: new InstrumentAdvice<long> { HistogramBucketBoundaries = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576] });
        _duration = m.CreateHistogram<double>("gen_ai.client.operation.duration", unit: "s", description: "Call duration through the gateway",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92] });
    }

    public long UnpricedCalls => Interlocked.Read(ref _unpricedCount);
    private long _unpricedCount;

    /// <summary>Prices the call, counts it, and enqueues its ledger record (after <paramref name="complete"/> may add to it).</summary>
    public LedgerRecord Finish(LeverCall c, Func<LedgerRecord, LedgerRecord>? complete = null)
    {
        var record = Build(c);
        if (complete is not null) record = complete(record);
        _ledger.Enqueue(record);
        return record;
    }

    /// <summary>Like <see cref="Finish"/>, and completes when the record is as durable as the ledger's fsync policy promises.</summary>
    public async ValueTask<LedgerRecord> FinishAsync(LeverCall c, Func<LeverCall, LedgerRecord, LedgerRecord>? complete = null)
    {
        var record = Build(c);
        if (complete is not null) record = complete(c, record);
        await _ledger.AppendAsync(record).ConfigureAwait(false);
        return record;
    }

    /// <summary>Like <see cref="FinishAsync(LeverCall, Func{LeverCall, LedgerRecord, LedgerRecord})"/> with a completion that may wait (run state in a shared store).</summary>
    public async ValueTask<LedgerRecord> FinishAsync(LeverCall c, Func<LeverCall, LedgerRecord, ValueTask<LedgerRecord>> complete)
    {
        var record = await complete(c, Build(c)).ConfigureAwait(false);
        await _ledger.AppendAsync(record).ConfigureAwait(false);
        return record;
    }

    /// <summary>The call's cost from its usage so far (null when its model is unpriced).</summary>
    public decimal? CostOf(LeverCall c)
    {
        var model = c.Summary.Model ?? c.RequestedModel;
        if (model is null) return null;
        var price = _catalog().Find(model).Price ?? (c.RequestedModel is null ? null : _catalog().Find(c.RequestedModel).Price);
        return price is null ? null : CostCalculator.Compute(price, c.Summary.Usage).Total;
    }

    public LedgerRecord Build(LeverCall c) => Build(c, observe: true);

    /// <summary>The record a warm-up call (<see cref="LeverCall.Rehearsal"/>) would have had: built and priced, not written, not counted.</summary>
    public LedgerRecord Rehearse(LeverCall c) => Build(c, observe: false);

    private LedgerRecord Build(LeverCall c, bool observe)
    {
        var s = c.Summary;
        var served = s.Model ?? c.RequestedModel;
        var usage = s.Usage;
        string? estimated = null;
        var usageEstimated = false;
        if (s.Answered && !s.UsageFinal && c.CacheHit is null)
        {
            // the upstream answered but its final usage never arrived (a stream cut off, a body without readable usage):
            // bill an honest estimate, flagged, never $0: input from message_start when the provider sent it, else the
            // pre-call estimate; output the tokens of what was streamed (at least one per delta)
            var inputKnown = s.UsageSeen && usage.TotalInputTokens > 0;
            if (!inputKnown) usage = usage with { InputTokens = c.EstimatedInputTokens };
            var counted = CountOutput(served ?? "", s);
            var output = Math.Max(usage.OutputTokens, Math.Max(s.Deltas, counted));
            usage = usage with { OutputTokens = output };
            usageEstimated = true;
            if (c.Outcome == "ok")
            {
                // a complete 200 whose usage Bursar cannot read is an error on the row, not a priced call
                c.Outcome = "upstream_error";
                c.ErrorType ??= "usage_unreadable";
            }
            estimated = $"usage estimated: the provider's usage never arrived; input {usage.TotalInputTokens} tokens {(inputKnown ? "from message_start" : "estimated before the call")}, output {output} tokens counted from the streamed output ({s.Deltas} deltas)";
        }
        if (observe && (c.ErrorType ?? s.ErrorType) == "usage_unreadable")
        {
            _usageUnreadable.Add(1, new KeyValuePair<string, object?>("gen_ai.provider.name", c.Provider ?? "unknown"));
            LogUsageUnreadable(_logger, c.Provider, served, c.Id);
        }
        decimal? cost = null;
        decimal promptCacheSaving = 0m, routingSaving = 0m, contextSaving = 0m;
        var priced = false;
        if (served is not null)
        {
            var lookup = _catalog().Find(served);
            if (lookup.Price is null && c.RequestedModel is not null && c.RequestedModel != served) lookup = _catalog().Find(c.RequestedModel);
            if (lookup.Price is { } price)
            {
                priced = true;
                cost = CostCalculator.Compute(price, usage).Total;
                // prompt caching credits what it shows on the bill: the read discount minus the write premium (one rule for every report)
                promptCacheSaving = CostCalculator.PromptCacheSaving(price, usage);
                // routing credits what the same tokens would have cost on the model the caller asked for
                if (c.RoutedFrom is not null && c.RoutedFrom != served && _catalog().Find(c.RoutedFrom).Price is { } asked)
                    routingSaving = CostCalculator.Compute(asked, usage).Total - cost.Value;
                // the context lever credits the tokens it removed at the rate this call would have billed them (the cache-read rate
                // when the call read its prefix from the cache: the removed turns sat in it; else the input rate), less what moving its
                // boundary cost: the tokens written to the cache again at the write rate instead of read (negative when a step did not pay);
                // what was re-written is bounded by what the call wrote beyond the tail it writes either way (usage says what it wrote:
                // a provider that bills writes, Anthropic, reports them, and a call that wrote nothing, below the model's minimum or without
                // breakpoints, re-wrote nothing; where writes are implicit, OpenAI, every uncached input token is one the cache could have read)
                if (c.Context is { TokensRemoved: > 0 } context && c.CacheHit is null)
                {
                    var read = price.Rates.CacheRead ?? price.Rates.Input;
                    var written = usage.CacheWrite5mTokens + usage.CacheWrite1hTokens + (price.Rates.CacheWrite5m is null ? usage.InputTokens : 0);
                    var rewritten = Math.Min(context.RewrittenTokens, Math.Max(0, written - context.TailTokens));
                    contextSaving = (context.TokensRemoved * (usage.CacheReadTokens > 0 ? read : price.Rates.Input)
                        - rewritten * ((price.Rates.CacheWrite5m ?? price.Rates.Input) - read)) / 1_000_000m;
                }
                // a summarization checkpoint's own call exists only because of compaction: its cost is credited against the lever, so the
                // saving summed over a conversation is net of the summary calls (and its counterfactual cost is zero)
                if (c.Attribution.Task == Context.SummaryCall.Task) contextSaving = -cost.Value;
            }
            else if (observe && !usage.IsEmpty)
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
            Dialect = c.Dialect,
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
            UsageEstimated = usageEstimated,
            Priced = priced,
            Cost = cost,
            CounterfactualCost = cost + (c.CacheHit?.CostUsd ?? 0m) + promptCacheSaving + routingSaving + contextSaving,
            SavingRouting = routingSaving,
            Route = c.Route,
            PrefixHash = c.Prefix?.Hash,
            PrefixTokens = c.Prefix?.Tokens ?? 0,
            SavingResponseCache = c.CacheHit?.CostUsd ?? 0m,
            SavingPromptCache = promptCacheSaving,
            SavingCompaction = contextSaving,
            ContextTokensRemoved = c.CacheHit is null ? c.Context?.TokensRemoved ?? 0 : 0,
            ContextStrategy = c.CacheHit is null ? c.Context?.Strategy : null,
            LatencyMs = elapsed.TotalMilliseconds,
            TimeToFirstTokenMs = ttft,
            Outcome = c.Outcome,
            StatusCode = c.StatusCode,
            ErrorType = c.ErrorType ?? s.ErrorType,
            ErrorMessage = Join(c.ErrorMessage ?? s.ErrorMessage, estimated),
            RoutingReason = c.RoutingReason,
            VolatilePrefix = c.VolatilePrefix,
            FinishReason = s.FinishReason,
            UpstreamRequestId = c.UpstreamRequestId ?? s.ResponseId,
        };
        if (observe) Observe(c, record, usage);
        return record;
    }

    private static string? Join(string? a, string? b) => a is null ? b : b is null ? a : a + "; " + b;

    /// <summary>Output tokens of the generated text seen so far, with the model's tokenizer (scaled up past the kept text).</summary>
    private static long CountOutput(string model, CallSummary s)
    {
        if (s.OutputTextChars == 0) return 0;
        var text = s.OutputText;
        long n = Bursar.Core.Tokens.TokenCounter.Default.Count(model, text);
        return text.Length >= s.OutputTextChars ? n : (long)Math.Ceiling(n * (double)s.OutputTextChars / text.Length);
    }

    private void Observe(LeverCall c, LedgerRecord record, TokenUsage usage)
    {
        var model = new KeyValuePair<string, object?>("gen_ai.response.model", record.ServedModel ?? "unknown");
        _calls.Add(1, new KeyValuePair<string, object?>("outcome", c.Outcome), model);
        if (record.Cost is { } usd) _cost.Add((double)usd, model);
        if (record.SavingResponseCache > 0) _saved.Add((double)record.SavingResponseCache, new KeyValuePair<string, object?>("lever", "response_cache"));
        if (record.SavingPromptCache != 0) _saved.Add((double)record.SavingPromptCache, new KeyValuePair<string, object?>("lever", "prompt_cache"));
        if (record.SavingRouting != 0) _saved.Add((double)record.SavingRouting, new KeyValuePair<string, object?>("lever", "routing"));
        if (record.SavingCompaction != 0) _saved.Add((double)record.SavingCompaction, new KeyValuePair<string, object?>("lever", "context"));
        if (c.CacheHit is not null) _cacheHits.Add(1, new KeyValuePair<string, object?>("kind", c.Provider == "bursar-semantic-cache" ? "semantic" : "exact"));
        if (c.Outcome == "refused") _refusals.Add(1, new KeyValuePair<string, object?>("reason", record.ErrorType ?? "policy"));
        var provider = new KeyValuePair<string, object?>("gen_ai.provider.name", c.Provider ?? c.Dialect);
        var operation = new KeyValuePair<string, object?>("gen_ai.operation.name", "chat");
        var requested = new KeyValuePair<string, object?>("gen_ai.request.model", c.RequestedModel ?? "unknown");
        if (_duration.Enabled) _duration.Record(record.LatencyMs / 1000.0, new TagList { operation, provider, requested, model });
        if (!usage.IsEmpty && _tokens.Enabled)
        {
            _tokens.Record(usage.TotalInputTokens, new TagList { operation, provider, requested, model, new("gen_ai.token.type", "input") });
            _tokens.Record(usage.OutputTokens, new TagList { operation, provider, requested, model, new("gen_ai.token.type", "output") });
        }
        if (Spans.HasListeners())
        {
            using var span = Spans.StartActivity($"chat {c.RequestedModel}", System.Diagnostics.ActivityKind.Client, parentContext: default, startTime: c.Started);
            if (span is not null)
            {
                span.SetTag("gen_ai.operation.name", "chat");
                span.SetTag("gen_ai.provider.name", provider.Value);
                span.SetTag("gen_ai.request.model", c.RequestedModel);
                span.SetTag("gen_ai.response.model", record.ServedModel);
                span.SetTag("gen_ai.response.id", record.UpstreamRequestId);
                span.SetTag("gen_ai.response.finish_reasons", record.FinishReason is null ? null : new[] { record.FinishReason });
                span.SetTag("gen_ai.usage.input_tokens", usage.TotalInputTokens);
                span.SetTag("gen_ai.usage.output_tokens", usage.OutputTokens);
                span.SetTag("gen_ai.usage.cache_read.input_tokens", usage.CacheReadTokens);
                span.SetTag("gen_ai.usage.cache_creation.input_tokens", usage.CacheWriteTokens);
                span.SetTag("bursar.cost_usd", record.Cost?.ToString(System.Globalization.CultureInfo.InvariantCulture));
                span.SetTag("bursar.feature", record.Feature);
                span.SetTag("bursar.customer", record.Customer);
                if (c.Outcome != "ok") span.SetTag("error.type", record.ErrorType ?? c.Outcome);
                span.SetEndTime(c.Started.UtcDateTime + TimeSpan.FromMilliseconds(record.LatencyMs));
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Usage UNREADABLE from provider '{Provider}' (model '{Model}', call {CallId}): recorded as an upstream error at an estimated cost. Check the deployment's Dialect and BaseUrl.")]
    private static partial void LogUsageUnreadable(ILogger logger, string? provider, string? model, string callId);

    [LoggerMessage(Level = LogLevel.Warning, Message = "UNPRICED model '{Model}' (call {CallId}, key {KeyId}): cost recorded as unknown, not $0. Add it with `bursar prices import` or Bursar:Prices.")]
    private static partial void LogUnpriced(ILogger logger, string model, string callId, string? keyId);
}
