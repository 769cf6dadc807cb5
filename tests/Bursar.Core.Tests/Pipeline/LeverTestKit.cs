using System.Diagnostics.Metrics;
using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Attribution;
using Bursar.Core.Budgets;
using Bursar.Core.Caching;
using Bursar.Core.Keys;
using Bursar.Core.Ledger;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;
using Bursar.Core.Routing;
using Bursar.Core.Tokens;
using Bursar.Core.Usage;
using Microsoft.Extensions.Logging.Abstractions;

namespace Bursar.Core.Tests.Pipeline;

/// <summary>What the stage tests share: calls built from a JSON body, a provider that records it was called, a ledger in memory.</summary>
internal static class Levers
{
    public static readonly PriceCatalog Catalog = new(PriceFiles.LoadBuiltIn());

    /// <summary>The faces' rule (RequestScan for the gateway, ChatRequestJson for the library): temperature 0 or top_k 1.</summary>
    private static bool IsDeterministic(System.Text.Json.Nodes.JsonObject body) =>
        (body["temperature"] is System.Text.Json.Nodes.JsonValue t && t.TryGetValue<double>(out var temp) && temp == 0)
        || (body["top_k"] is System.Text.Json.Nodes.JsonValue k && k.TryGetValue<int>(out var topK) && topK == 1);

    public static VirtualKey Key(string id = "key_1", string? team = null, string? customer = null, string? feature = null, string[]? allowed = null,
        string[]? customers = null, string? downgrade = null) => new()
        {
            Id = id, Hash = "h-" + id, Prefix = "bsr_" + id, Team = team, Customer = customer, Feature = feature, AllowedTagHeaders = allowed,
            AllowedCustomers = customers, DowngradeModel = downgrade, CreatedAt = DateTimeOffset.UnixEpoch,
        };

    public static Func<string, string?> Headers(params (string Name, string Value)[] headers) =>
        name => headers.FirstOrDefault(h => string.Equals(h.Name, name, StringComparison.OrdinalIgnoreCase)).Value;

    public static string OpenAI(string model, string user, double? temperature = 0, long? maxTokens = null, string? system = null, bool stream = false)
    {
        var messages = new JsonArray();
        if (system is not null) messages.Add(new JsonObject { ["role"] = "system", ["content"] = system });
        messages.Add(new JsonObject { ["role"] = "user", ["content"] = user });
        var o = new JsonObject { ["model"] = model, ["messages"] = messages };
        if (temperature is { } t) o["temperature"] = t;
        if (maxTokens is { } m) o["max_tokens"] = m;
        if (stream) o["stream"] = true;
        return o.ToJsonString();
    }

    public static string Anthropic(string model, string user, double? temperature = 0, long maxTokens = 1024, string? system = null, bool stream = false)
    {
        var o = new JsonObject { ["model"] = model, ["max_tokens"] = maxTokens };
        if (system is not null) o["system"] = system;
        o["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = user }) });
        if (temperature is { } t) o["temperature"] = t;
        if (stream) o["stream"] = true;
        return o.ToJsonString();
    }

    /// <summary>
    /// A call as a face would hand it to the stages: the scalars read from the body (as the gateway's scan does) and the body
    /// parsed on first use. <paramref name="attribute"/> runs what the attribution stage does (tags, policy, model).
    /// </summary>
    public static LeverCall Call(string json, string dialect = "openai", VirtualKey? key = null, Func<string, string?>? tags = null, RoutePolicy? policy = null,
        string cacheControl = "", long? estimatedInputTokens = null, bool? deterministic = null, bool attribute = true, DateTimeOffset? started = null, TimeProvider? clock = null)
    {
        var body = (JsonObject)JsonNode.Parse(json)!;
        var model = body["model"]!.GetValue<string>();
        var maxTokens = body["max_tokens"]?.GetValue<long>() ?? body["max_completion_tokens"]?.GetValue<long>();
        var estimate = estimatedInputTokens ?? TokenCounter.Default.Count(model, json);
        var call = new LeverCall
        {
            Id = Guid.NewGuid().ToString("N"),
            Started = clock?.GetUtcNow() ?? started ?? DateTimeOffset.UnixEpoch,
            StartTimestamp = clock?.GetTimestamp() ?? 0,
            Dialect = dialect,
            Key = key ?? Key(),
            Tags = tags ?? (_ => null),
            RequestedModel = model,
            EstimatedInputTokens = estimate,
            Streamed = body["stream"]?.GetValue<bool>() ?? false,
        };
        call.Request = new CallRequest(() => (JsonObject)JsonNode.Parse(json)!)
        {
            Model = model,
            Stream = call.Streamed,
            Deterministic = deterministic ?? IsDeterministic(body),
            EstimatedInputTokens = estimate,
            InputTokenBound = estimate,
            MaxTokens = maxTokens,
            CacheControl = cacheControl,
        };
        if (attribute)
        {
            call.Attribution = AttributionResolver.Resolve(call.Key, call.Tags, out var error);
            Assert.Null(error);
            call.Policy = policy;
            call.Route = policy?.Name;
            call.Model = model;
        }
        return call;
    }
}

/// <summary>The rest of the pipeline as a stage sees it: records each call and, like a provider, answers it.</summary>
internal sealed class FakeProvider
{
    private int _calls;

    public int Calls => Volatile.Read(ref _calls);
    public List<LeverCall> Seen { get; } = [];
    public TokenUsage Usage { get; set; } = new(InputTokens: 100, CacheReadTokens: 0, CacheWrite5mTokens: 0, CacheWrite1hTokens: 0, OutputTokens: 20);
    public string Outcome { get; set; } = "ok";
    /// <summary>Awaited inside the provider call before it answers (a slow upstream).</summary>
    public Task? Gate { get; set; }

    public static byte[] AnswerFor(LeverCall call) => Encoding.UTF8.GetBytes($$"""{"id":"{{call.Id}}","model":"{{call.Model}}","answer":"from the provider"}""");

    public LeverNext Next => NextAsync;

    private async ValueTask NextAsync(LeverCall call, CancellationToken ct)
    {
        Interlocked.Increment(ref _calls);
        lock (Seen) Seen.Add(call);
        if (Gate is { } gate) await gate.WaitAsync(ct);
        call.Provider = "fake";
        call.Summary.Model = call.Model;
        call.Summary.Usage = Usage;
        call.Summary.UsageSeen = call.Summary.UsageFinal = call.Summary.Answered = true;
        call.Outcome = Outcome;
        call.StatusCode = Outcome == "ok" ? 200 : 502;
        if (call.CaptureAnswer && Outcome == "ok") call.Answer = (AnswerFor(call), "application/json");
    }
}

internal sealed class ServedModels(params string[] models) : IServedModels
{
    public bool Serves(string model) => models.Contains(model, StringComparer.Ordinal);
    public string NotServed(string model) => $"The model '{model}' is not served here (served: {string.Join(", ", models)}).";
}

internal sealed class TestMeterFactory : IMeterFactory
{
    private readonly List<Meter> _meters = [];
    public Meter Create(MeterOptions options)
    {
        var m = new Meter(options);
        lock (_meters) _meters.Add(m);
        return m;
    }

    public void Dispose()
    {
        lock (_meters) foreach (var m in _meters) m.Dispose();
    }
}

/// <summary>A ledger store in memory; idempotent by record id, as <see cref="ILedgerStore"/> requires.</summary>
internal sealed class MemoryLedgerStore : ILedgerStore
{
    private readonly Dictionary<string, LedgerRecord> _records = new(StringComparer.Ordinal);
    public int Writes { get; private set; }

    public Task WriteAsync(IReadOnlyList<LedgerRecord> records, CancellationToken cancellationToken)
    {
        lock (_records)
        {
            Writes += records.Count;
            foreach (var r in records) _records[r.Id] = r;
        }
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<LedgerRecord>> ReadAsync(LedgerQuery query, CancellationToken cancellationToken)
    {
        lock (_records) return Task.FromResult<IReadOnlyList<LedgerRecord>>(_records.Values.OrderBy(r => r.Timestamp).Take(query.Limit).ToArray());
    }

    public Task<long> CountAsync(CancellationToken cancellationToken)
    {
        lock (_records) return Task.FromResult((long)_records.Count);
    }
}

internal sealed class MemoryBudgetStore(params BudgetDefinition[] budgets) : IBudgetStore
{
    public Task<IReadOnlyList<BudgetDefinition>> ListBudgetsAsync(CancellationToken ct) => Task.FromResult<IReadOnlyList<BudgetDefinition>>(budgets);
    public Task UpsertBudgetAsync(BudgetDefinition b, CancellationToken ct) => Task.CompletedTask;
    public Task<bool> DeleteBudgetAsync(string id, CancellationToken ct) => Task.FromResult(false);
    public Task<bool> ResetBudgetAsync(string id, DateTimeOffset when, CancellationToken ct) => Task.FromResult(false);
    public Task<decimal> SpentSinceAsync(BudgetDefinition b, DateTimeOffset since, CancellationToken ct) => Task.FromResult(0m);
}

internal sealed class NoAlerts : IBudgetAlertSink
{
    public void SoftLimitReached(BudgetStatus status) { }
}

/// <summary>A <see cref="CallMeter"/> over a real <see cref="LedgerWriter"/> (journal in a temp folder, store in memory).</summary>
internal sealed class MeterKit : IAsyncDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "bursar-levers-" + Guid.NewGuid().ToString("N"));
    private readonly TestMeterFactory _meters = new();

    public MeterKit(TimeProvider? time = null)
    {
        Time = time ?? TimeProvider.System;
        Writer = new LedgerWriter(Store, new LedgerWriterOptions { SpoolDirectory = Path.Combine(_dir, "spool"), FlushInterval = TimeSpan.FromMilliseconds(5), RetryDelay = TimeSpan.FromMilliseconds(20) },
            NullLogger<LedgerWriter>.Instance, TimeProvider.System); // the writer's own timers run on real time: a fake clock that never moves would hold its drain forever
        Writer.Start();
        Meter = new CallMeter(() => Levers.Catalog, Writer, Time, NullLogger<CallMeter>.Instance, _meters);
    }

    public TimeProvider Time { get; }
    public MemoryLedgerStore Store { get; } = new();
    public LedgerWriter Writer { get; }
    public CallMeter Meter { get; }

    /// <summary>Closes the writer (it commits what it holds) and returns what reached the store.</summary>
    public async Task<IReadOnlyList<LedgerRecord>> FlushAsync()
    {
        await Writer.DisposeAsync();
        return await Store.ReadAsync(new LedgerQuery(), default);
    }

    public async ValueTask DisposeAsync()
    {
        await Writer.DisposeAsync();
        _meters.Dispose();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }
}
