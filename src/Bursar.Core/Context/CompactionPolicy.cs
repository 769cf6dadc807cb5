namespace Bursar.Core.Context;

/// <summary>
/// A route's context compaction (<c>Compaction: { Strategy, ... }</c> on a route policy). Conversations whose input estimate is
/// below <see cref="TriggerTokens"/>, or with no more than <see cref="KeepTurns"/> turns, go upstream byte for byte.
/// A turn is a user message (not one that only carries tool results) with the assistant turns and tool results after it.
/// </summary>
public sealed class CompactionPolicy
{
    /// <summary>Tool results older than the kept turns become a stub naming the tool, its identifiers and the tokens removed.</summary>
    public const string PruneToolResults = "prune-tool-results";
    /// <summary>The kept turns verbatim, the older ones replaced by a short header (what the user asked, the tools called with their arguments).</summary>
    public const string SlidingWindow = "sliding-window";

    /// <summary>
    /// Summarization checkpoints: every <see cref="SummaryEvery"/> turns past the kept ones, the older turns are replaced by a summary from
    /// <see cref="SummaryModel"/> (its own ledger row, task <c>compaction-summary</c>), made once per checkpoint and reused until the next.
    /// </summary>
    public const string Summarize = "summarize";

    /// <summary>
    /// Retrieval: a sliding window that also keeps verbatim the <see cref="RetrieveTurns"/> older turns most similar to the newest user turn
    /// (embedded with the semantic cache's encoder); the other older turns become the sliding window's header. Cache-aware, the turns kept
    /// are chosen when the boundary steps (against the user turn of that step) and stay until the next step, so the prefix stays stable.
    /// Without an encoder (the semantic cache's failed to load) it is a sliding window.
    /// </summary>
    public const string Retrieval = "retrieval";

    public static readonly string[] Strategies = [PruneToolResults, SlidingWindow, Summarize, Retrieval];

    /// <summary>The strategy: <c>prune-tool-results</c> (default), <c>sliding-window</c>, <c>summarize</c> or <c>retrieval</c>.</summary>
    public string Strategy { get; set; } = PruneToolResults;

    /// <summary>The newest turns kept verbatim (K). Default 3; at least 1.</summary>
    public int KeepTurns { get; set; } = 3;

    /// <summary>Conversations estimated below this many input tokens are not compacted. Default 3,000.</summary>
    public long TriggerTokens { get; set; } = 3_000;

    /// <summary>Tool results of at most this many tokens are never pruned (a stub would not be shorter). Default 60.</summary>
    public int MinPrunedTokens { get; set; } = 60;

    /// <summary>
    /// Cache-aware stepping (default true): the compacted prefix stays the same across the following turns, so the provider's prompt
    /// cache warms again; the boundary moves only when the tokens a step removes, billed at the cache-read rate over
    /// <see cref="ExpectedRemainingTurns"/>, exceed the cost of writing the cache again. False: compact up to the kept turns on every call.
    /// </summary>
    public bool CacheAware { get; set; } = true;

    /// <summary>The turns a conversation is expected to go on for after a step, when weighing a step's saving. Default 5.</summary>
    public int ExpectedRemainingTurns { get; set; } = 5;

    /// <summary>Summarize: a checkpoint every this many turns (the summary covers whole multiples of it). Default 6.</summary>
    public int SummaryEvery { get; set; } = 6;

    /// <summary>Summarize: the model that writes summaries; default the small tier of the served model's family (gpt-4o: gpt-4o-mini, Claude Sonnet: Haiku).</summary>
    public string? SummaryModel { get; set; }

    /// <summary>Summarize: the summary's output limit. Default 400 tokens.</summary>
    public int SummaryMaxTokens { get; set; } = 400;

    /// <summary>Retrieval: the older turns kept verbatim for their relevance to the newest user turn. Default 2; 0 to 20.</summary>
    public int RetrieveTurns { get; set; } = 2;

    /// <summary>Throws naming <paramref name="where"/> and the field at fault.</summary>
    public void Validate(string where, string route)
    {
        if (Array.IndexOf(Strategies, Strategy) < 0)
            throw new InvalidOperationException($"{where}:Strategy '{Strategy}' (route '{route}') must be one of: {string.Join(", ", Strategies)}.");
        if (KeepTurns is < 1 or > 1000) throw new InvalidOperationException($"{where}:KeepTurns {KeepTurns} (route '{route}') must be between 1 and 1000.");
        if (TriggerTokens < 0) throw new InvalidOperationException($"{where}:TriggerTokens {TriggerTokens} (route '{route}') must be 0 or more.");
        if (MinPrunedTokens < 0) throw new InvalidOperationException($"{where}:MinPrunedTokens {MinPrunedTokens} (route '{route}') must be 0 or more.");
        if (SummaryEvery is < 1 or > 1000) throw new InvalidOperationException($"{where}:SummaryEvery {SummaryEvery} (route '{route}') must be between 1 and 1000.");
        if (SummaryMaxTokens is < 16 or > 8192) throw new InvalidOperationException($"{where}:SummaryMaxTokens {SummaryMaxTokens} (route '{route}') must be between 16 and 8192.");
        if (RetrieveTurns is < 0 or > 20) throw new InvalidOperationException($"{where}:RetrieveTurns {RetrieveTurns} (route '{route}') must be between 0 and 20.");
        if (ExpectedRemainingTurns is < 1 or > 1000) throw new InvalidOperationException($"{where}:ExpectedRemainingTurns {ExpectedRemainingTurns} (route '{route}') must be between 1 and 1000.");
    }
}
