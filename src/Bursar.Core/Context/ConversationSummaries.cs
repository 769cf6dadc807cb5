using System.Collections.Concurrent;
using System.IO.Hashing;
using System.Text;
using Bursar.Core.Attribution;
using Bursar.Core.Budgets;
using Bursar.Core.Metering;
using Bursar.Core.Pipeline;
using Bursar.Core.Pricing;

namespace Bursar.Core.Context;

/// <summary>Summarizes the older turns of a conversation for a summarization checkpoint; each face makes the call its own way.</summary>
public interface IConversationSummarizer
{
    /// <summary>The summary of <paramref name="transcript"/> by <paramref name="model"/>, or null when it could not be made (the call is not compacted then).</summary>
    /// <param name="call">The call being compacted (its attribution and route go on the summary's own ledger row).</param>
    Task<string?> SummarizeAsync(LeverCall call, string model, string transcript, int maxTokens, CancellationToken cancellationToken);

    /// <summary>The null object: no summary call can be made here; a summarizing route falls back to its sliding window header.</summary>
    public static IConversationSummarizer None { get; } = new NoSummarizer();

    private sealed class NoSummarizer : IConversationSummarizer
    {
        public Task<string?> SummarizeAsync(LeverCall call, string model, string transcript, int maxTokens, CancellationToken cancellationToken) => Task.FromResult<string?>(null);
    }
}

/// <summary>
/// The summary call as every face records it: the prompt, and a ledger row of its own (task <c>compaction-summary</c>, the caller's tags
/// and route) charged to the caller's budgets, as the LLM classifier's call is.
/// </summary>
public static class SummaryCall
{
    public const string Task = "compaction-summary";

    /// <summary>What the summarizer is told (the transcript follows as the user turn).</summary>
    public const string Instruction =
        "Summarize the conversation below for the assistant that continues it. Keep every fact a later turn may need: names, ids, codes, dates, "
        + "amounts, choices the user made, what each tool returned and what was done. Write in the conversation's language. No preamble.";

    /// <summary>The transcript shown is at most this many characters (its newest part when longer).</summary>
    public const int MaxTranscriptChars = 60_000;

    public static LeverCall Begin(TimeProvider time, string dialect, string model, string? provider, CallAttribution attribution, string? route) => new()
    {
        Id = Guid.CreateVersion7(time.GetUtcNow()).ToString("N"), Started = time.GetUtcNow(), StartTimestamp = time.GetTimestamp(), Dialect = dialect,
        Attribution = attribution with { Task = Task }, RequestedModel = model, Provider = provider, Route = route, Model = model,
    };

    /// <summary>Writes the row and charges its cost to the caller's budgets.</summary>
    public static void Finish(LeverCall call, CallMeter meter, BudgetManager budgets, PriceCatalog catalog, CallAttribution attribution, string model)
    {
        var record = meter.Finish(call);
        if (record.Cost is { } cost && catalog.Find(model).Price is { } price)
            budgets.Charge(new BudgetSubject(attribution.KeyId, attribution.Team, attribution.Customer, attribution.Feature, price.Model), cost);
    }

    public static string Shown(string transcript) => transcript.Length > MaxTranscriptChars ? transcript[^MaxTranscriptChars..] : transcript;
}

/// <summary>
/// Summaries by conversation, keyed by the caller's key and the hash of the turns a summary replaces: a checkpoint is summarized once and
/// every later call of the conversation reuses the same text (the compacted prefix stays byte-stable, so the provider cache warms again).
/// Bounded: past <see cref="Capacity"/> entries the oldest go. Thread-safe.
/// </summary>
public sealed class SummaryStore(int capacity = 10_000)
{
    private readonly ConcurrentDictionary<string, string> _summaries = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _order = new();

    public int Capacity { get; } = capacity;
    public int Count => _summaries.Count;

    /// <summary>The key of the turns <paramref name="replaced"/> (their wire text) for <paramref name="keyId"/>.</summary>
    public static string KeyOf(string keyId, string replaced) =>
        keyId + ":" + Convert.ToHexStringLower(XxHash128.Hash(Encoding.UTF8.GetBytes(replaced)));

    public bool TryGet(string key, out string summary) => _summaries.TryGetValue(key, out summary!);

    public void Add(string key, string summary)
    {
        if (!_summaries.TryAdd(key, summary)) return;
        _order.Enqueue(key);
        while (_summaries.Count > Capacity && _order.TryDequeue(out var old)) _summaries.TryRemove(old, out _);
    }
}
