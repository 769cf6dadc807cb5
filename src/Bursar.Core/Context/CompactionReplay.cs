namespace Bursar.Core.Context;

/// <summary>
/// What the compaction decisions (<see cref="Compactor.Boundary"/>) read of a conversation: its messages' rough sizes, where its turns
/// start, and what a step would remove. A read request (<see cref="Conversation"/>) or a ledger run's token series (<see cref="TokenSeries"/>).
/// </summary>
internal interface ICompactionSeries
{
    /// <summary>The message index each turn starts at.</summary>
    IReadOnlyList<int> TurnStarts { get; }
    /// <summary>How many messages.</summary>
    int Count { get; }
    /// <summary>The first message that is not a system message (-1: none).</summary>
    int FirstConversational { get; }
    long Tokens(int from, int to);
    /// <summary>The tokens compacting messages [<paramref name="from"/>, <paramref name="to"/>) removes.</summary>
    long Saving(int from, int to, bool sliding, int minPruned, int stubTokens);
    int FirstPrunable(int from, int to, int minPruned);
    bool CleanStart(int i);
}

/// <summary>
/// A conversation known only by its tokens: the system messages as message 0, then one message per turn, of the given sizes and the
/// given savings (what a sliding window's header saves when it replaces the turn).
/// </summary>
internal sealed class TokenSeries : ICompactionSeries
{
    private readonly long[] _prefix;
    private readonly long[] _saving;

    /// <param name="system">The system messages' tokens.</param>
    /// <param name="turns">Each turn's tokens and what replacing it with its header lines saves, oldest first (the newest may be the call's partial turn).</param>
    public TokenSeries(long system, IReadOnlyList<(long Tokens, long Saving)> turns)
    {
        _prefix = new long[turns.Count + 2];
        _saving = new long[turns.Count + 2];
        _prefix[1] = system;
        for (var t = 0; t < turns.Count; t++)
        {
            _prefix[t + 2] = _prefix[t + 1] + turns[t].Tokens;
            _saving[t + 2] = _saving[t + 1] + turns[t].Saving;
        }
        var starts = new int[turns.Count];
        for (var t = 0; t < starts.Length; t++) starts[t] = t + 1;
        TurnStarts = starts;
    }

    public IReadOnlyList<int> TurnStarts { get; }
    public int Count => _prefix.Length - 1;
    public int FirstConversational => Count > 1 ? 1 : -1;
    public long Tokens(int from, int to) => _prefix[Math.Clamp(to, 0, Count)] - _prefix[Math.Clamp(from, 0, Count)];

    public long Saving(int from, int to, bool sliding, int minPruned, int stubTokens) =>
        sliding ? _saving[Math.Clamp(to, 1, Count)] - _saving[Math.Clamp(from, 1, Count)] : 0; // a pruned tool result's size is not in the tokens

    public int FirstPrunable(int from, int to, int minPruned) => -1;
    public bool CleanStart(int i) => true;
}

/// <summary>One call of a run as the ledger has it: its input tokens (all of them, cached or not), those read from the cache, its output, and whether it continues its predecessor's turn.</summary>
/// <param name="ContinuesTurn">The previous call of the run asked for tools, so this call carries their results: the same turn (a new user message starts the next).</param>
public readonly record struct RunCall(long InputTokens, long CachedTokens, long OutputTokens, bool ContinuesTurn);

/// <summary>A run a sliding window already compacted, for <see cref="CompactionReplay.FitHeaderTokens"/>: its calls as they were before compaction (input plus the tokens removed) and the tokens the stage removed from each.</summary>
public sealed record CompactedRun(IReadOnlyList<RunCall> Calls, IReadOnlyList<long> Removed, CompactionPolicy Policy, CacheRates Rates, long FixedTokens, long SystemTokens);

/// <summary>What compaction would have done to one call of a run: the tokens removed, whether its boundary moved since the previous call, and the tokens it would read from the cache.</summary>
public readonly record struct ReplayedCall(long TokensRemoved, bool Moved, long CachedTokens);

/// <summary>
/// A route's compaction replayed on a run's token series (the ledger's consecutive calls of one agent run), with the stage's own
/// cache-aware decision (<see cref="Compactor.Boundary"/>): turn sizes come from the growth of the input from call to call (the newest
/// answer is part of what the next call sends), each call's boundary is the one the stage would choose on the conversation that call sent,
/// and what it reads from the provider cache follows: while the boundary stays, the removed tokens are cached tokens not sent; when it
/// moves, only the fixed prefix (system prompt, tools) is read and the rest written again.
/// </summary>
public static class CompactionReplay
{
    /// <summary>
    /// The tokens a sliding window's header keeps of each message it replaces, at most (what the user asked, clipped; the tool called
    /// with its arguments; the identifiers a result named): fitted on tau-bench airline conversations 0-79 (2026-12-03).
    /// </summary>
    public const long DefaultHeaderTokens = 55;

    /// <summary>Whether a strategy can be replayed from tokens alone (a sliding window; pruning, summaries and retrieval need the messages).</summary>
    public static bool CanReplay(string strategy) => strategy == CompactionPolicy.SlidingWindow;

    /// <summary>
    /// The header size (tokens kept per replaced message, at most) at which replaying <paramref name="runs"/> (runs a sliding window
    /// already compacted, each with its calls' input as it was before compaction and the tokens the stage removed) removes as many
    /// tokens as the stage did; null when it removed none.
    /// </summary>
    public static long? FitHeaderTokens(IReadOnlyList<CompactedRun> runs)
    {
        var actual = runs.Sum(r => r.Removed.Sum());
        if (actual <= 0) return null;
        long Removed(long h) => runs.Sum(r => Run(r.Calls, r.Policy, r.Rates, r.FixedTokens, r.SystemTokens, h).Sum(c => c.TokensRemoved));
        // the tokens removed fall as the header keeps more: bisect
        long lo = 0, hi = 4096;
        if (Removed(lo) <= actual) return lo;
        if (Removed(hi) >= actual) return hi;
        while (hi - lo > 1)
        {
            var mid = (lo + hi) / 2;
            if (Removed(mid) > actual) lo = mid; else hi = mid;
        }
        return hi;
    }

    /// <summary>
    /// Each call of <paramref name="calls"/> (one run, oldest first) compacted as <paramref name="policy"/> would compact it.
    /// </summary>
    /// <param name="fixedTokens">The input tokens before the first conversational message, as billed (system prompt and tools): never compacted, still read from the cache when the boundary moves.</param>
    /// <param name="systemTokens">Of those, the system messages' (what the stage counts with the conversation, against its trigger).</param>
    /// <param name="rates">The served model's cache rates (<see cref="CacheRates.Of"/>).</param>
    /// <param name="headerTokens">The tokens the header keeps of each replaced message at most: a message is what one call added to the input (an answer with the tool results or user message after it).</param>
    public static ReplayedCall[] Run(IReadOnlyList<RunCall> calls, CompactionPolicy policy, CacheRates rates, long fixedTokens, long systemTokens, long headerTokens = DefaultHeaderTokens)
    {
        if (!CanReplay(policy.Strategy)) throw new ArgumentException($"{policy.Strategy} cannot be replayed from tokens alone.", nameof(policy));
        var result = new ReplayedCall[calls.Count];
        if (calls.Count == 0) return result;
        var start = Math.Min(fixedTokens, calls[0].InputTokens);
        var system = Math.Clamp(systemTokens, 0, start);
        // the turns so far: their tokens and what their header saves; each call's growth of the input is one message of its turn (after
        // the answer that closes the previous turn, when it starts a new one)
        var turns = new List<(long Tokens, long Saving)>();
        long Saving(long tokens) => Math.Max(0, tokens - headerTokens);
        var previousCut = 0;
        for (var i = 0; i < calls.Count; i++)
        {
            var c = calls[i];
            // what the call added: the previous call's answer (its output), then the tool results or the user message after it
            var grown = Math.Max(0, i == 0 ? c.InputTokens - start : c.InputTokens - calls[i - 1].InputTokens);
            var answer = i == 0 ? 0 : Math.Min(grown, calls[i - 1].OutputTokens);
            if (answer > 0) turns[^1] = (turns[^1].Tokens + answer, turns[^1].Saving + Saving(answer));
            grown -= answer;
            if (i == 0 || !c.ContinuesTurn) turns.Add((grown, Saving(grown)));
            else turns[^1] = (turns[^1].Tokens + grown, turns[^1].Saving + Saving(grown));
            var series = new TokenSeries(system, turns);
            // the stage compacts a request estimated at the trigger or more, with more turns than it keeps
            var cut = c.InputTokens >= policy.TriggerTokens && turns.Count > policy.KeepTurns ? Compactor.Boundary(series, policy, sliding: true, rates).Cut : 0;
            var removed = cut <= 0 ? 0 : series.Saving(0, cut, sliding: true, policy.MinPrunedTokens, 0);
            var moved = cut != previousCut && removed > 0;
            var kept = Math.Min(c.CachedTokens, start);
            var cached = removed == 0 ? c.CachedTokens : moved ? kept : Math.Max(kept, c.CachedTokens - removed);
            result[i] = new ReplayedCall(removed, moved, Math.Min(cached, c.InputTokens - removed));
            previousCut = removed > 0 ? cut : 0;
        }
        return result;
    }
}
