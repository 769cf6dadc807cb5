using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Bursar.Core.Pricing;
using Bursar.Core.Tokens;

namespace Bursar.Core.Context;

/// <summary>Cache rates relative to the input rate: what a cached token bills at when read, and when written.</summary>
public readonly record struct CacheRates(double Read, double Write)
{
    /// <summary>The provider's published multipliers when the model has no price: Anthropic reads 0.1x, 5-minute writes 1.25x; OpenAI reads 0.5x, writes at the input rate.</summary>
    public static CacheRates Default(bool anthropic) => anthropic ? new(0.1, 1.25) : new(0.5, 1.0);

    /// <summary>The model's own rates (missing classes bill at the input rate, as the cost calculator bills them).</summary>
    public static CacheRates Of(PriceRates? rates, bool anthropic)
    {
        if (rates is null || rates.Input <= 0) return Default(anthropic);
        return new((double)((rates.CacheRead ?? rates.Input) / rates.Input), (double)((rates.CacheWrite5m ?? rates.Input) / rates.Input));
    }
}

/// <summary>Retrieval's choice for one call: the turns the header replaces, the older turns kept verbatim, and whether the compacted prefix changed since the previous turn.</summary>
public sealed record RetrievalPlan(int Turns, int[] Retained, bool Moved);

/// <summary>What a compaction did to one request.</summary>
public sealed record CompactionOutcome(string Strategy, long TokensRemoved, int CompactedTurns, int PrunedResults)
{
    /// <summary>
    /// Tokens this call writes to the provider's prompt cache again because its compaction boundary moved since the conversation's
    /// previous turn (0 when it did not move, or on a later call of the same turn, which reads what the first one wrote).
    /// </summary>
    public long RewrittenTokens { get; init; }

    /// <summary>
    /// The tokens from the newest assistant message on (what the previous call of the conversation did not send, so writes either way): the
    /// meter bounds <see cref="RewrittenTokens"/> by what the call actually wrote beyond them (a later call of a turn reads what the first
    /// one wrote; a call whose predecessor was answered from the response cache writes the new prefix itself).
    /// </summary>
    public long TailTokens { get; init; }
}

/// <summary>
/// Compacts a conversation in its own wire format (OpenAI chat or Anthropic messages), in place, as a route's
/// <see cref="CompactionPolicy"/> says: tool-result pruning or a sliding window, behind a cache-aware boundary that only
/// moves when a step pays for re-writing the provider's prompt cache. What it never changes: the system prompt (the
/// <c>system</c> field and every system or developer message), the tool definitions, the newest user turn, the pairing of a
/// tool call with its result, and (Anthropic) the alternation of user and assistant turns. Thread-safe: no state.
/// </summary>
public sealed class Compactor(TokenCounter counter)
{
    /// <summary>Tokens a prune stub is taken to cost when weighing a step (the exact count is reported after).</summary>
    private const int StubTokens = 24;

    /// <summary>Compacts <paramref name="body"/>'s messages; null when nothing changed (below the trigger, too few turns, or no step pays).</summary>
    public CompactionOutcome? Compact(JsonObject body, bool anthropic, CompactionPolicy policy, string model, CacheRates rates, CancellationToken ct = default)
    {
        if (body["messages"] is not JsonArray messages) return null;
        var conv = Conversation.Read(messages, anthropic);
        if (conv is null || conv.TurnStarts.Count <= policy.KeepTurns) return null;
        if (policy.Strategy == CompactionPolicy.Summarize) return null; // a summary is made before the edit (ContextStage), applied by ApplySummary
        // retrieval with its turns chosen goes through ApplyRetrieval; here (no encoder) it is the sliding window it extends
        var sliding = policy.Strategy is CompactionPolicy.SlidingWindow or CompactionPolicy.Retrieval;
        var (cut, previous, _) = Boundary(conv, policy, sliding, rates);
        if (cut <= 0) return null;
        ct.ThrowIfCancellationRequested();
        // where the bytes first change, read before the messages change (-1: the boundary did not move since the previous turn)
        var changed = Moved(conv, previous, cut) ? sliding ? conv.FirstConversational : conv.FirstPrunable(previous, cut, policy.MinPrunedTokens) : -1;
        var outcome = sliding ? Slide(messages, conv, cut, anthropic, model) : Prune(conv, cut, model, policy);
        return outcome is null ? null : Rewrite(outcome, messages, changed, model);
    }

    /// <summary>Whether the boundary differs from the previous turn's (then the compacted prefix changed since the conversation's previous turn).</summary>
    private static bool Moved(Conversation conv, int previous, int cut) => cut != previous && conv.TurnStarts.Count >= 2;

    /// <summary>
    /// <paramref name="outcome"/> with what the edit may make the call write to the provider cache again: the compacted messages from the
    /// first changed one (<paramref name="from"/>; -1: none) up to the newest assistant message (what the previous call sent), and the tail
    /// from there on (written either way); counted as the provider bills them, after the edit, on what is sent.
    /// </summary>
    private CompactionOutcome Rewrite(CompactionOutcome outcome, JsonArray messages, int from, string model)
    {
        var last = messages.Count - 1;
        while (last >= 0 && messages[last]?["role"]?.GetValue<string>() != "assistant") last--;
        if (last < 0) return outcome;
        long rewritten = 0, tail = 0;
        for (var i = Math.Max(from, 0); i < last && from >= 0; i++) rewritten += MessageTokens(model, messages[i]);
        for (var i = last; i < messages.Count; i++) tail += MessageTokens(model, messages[i]);
        return outcome with { RewrittenTokens = rewritten, TailTokens = tail };
    }

    /// <summary>
    /// Where compaction stops: every message before the returned index is compacted. Without cache awareness, the start of the oldest kept
    /// turn. With it, the boundary the conversation's own history gives: replaying its turns one by one, the boundary steps to the newest
    /// candidate only when the tokens that step removes, read from the cache for the expected remaining turns, outweigh writing the cache
    /// again from the first changed message up to what the previous call sent (the newest turn is written either way); the same conversation prefix therefore yields the same boundary on every later call.
    /// </summary>
    /// <returns>The boundary, the previous turn's, and how many turns the conversation had when the boundary last stepped (its newest user turn then is what retrieval ranks the older turns against).</returns>
    internal static (int Cut, int Previous, int At) Boundary(ICompactionSeries conv, CompactionPolicy policy, bool sliding, CacheRates rates)
    {
        var turns = conv.TurnStarts.Count;
        if (!policy.CacheAware) return (Candidate(conv, turns, policy.KeepTurns, sliding), Candidate(conv, turns - 1, policy.KeepTurns, sliding), turns);
        int cut = 0, previous = 0, at = 0;
        var premium = Math.Max(0, rates.Write - rates.Read);
        for (var n = policy.KeepTurns + 1; n <= turns; n++)
        {
            if (n == turns) previous = cut;
            var end = n < turns ? conv.TurnStarts[n] : conv.Count;
            var history = conv.Tokens(0, end);
            if (history < policy.TriggerTokens) continue;
            var candidate = Candidate(conv, n, policy.KeepTurns, sliding);
            if (candidate <= cut) continue;
            var saving = conv.Saving(cut, candidate, sliding, policy.MinPrunedTokens, StubTokens);
            if (saving <= 0) continue;
            // the first message whose bytes change: the header (the first message after the system prompt) or the first pruned result
            var changed = sliding ? conv.FirstConversational : conv.FirstPrunable(cut, candidate, policy.MinPrunedTokens);
            // what the previous call sent (the first n-1 turns) sits in the cache; the newest turn is written either way
            var cached = conv.TurnStarts[n - 1];
            var rewrite = Math.Max(0, conv.Tokens(Math.Max(changed, 0), cached) - saving);
            if (saving * rates.Read * policy.ExpectedRemainingTurns >= rewrite * premium) (cut, at) = (candidate, n);
        }
        return (cut, previous, at);
    }

    /// <summary>The boundary that keeps the last <paramref name="keep"/> of the first <paramref name="turns"/> turns (a sliding window never cuts at the newest turn, and on Anthropic only at a user turn without tool results).</summary>
    private static int Candidate(ICompactionSeries conv, int turns, int keep, bool sliding)
    {
        if (turns <= keep) return 0;
        var t = turns - keep;
        if (!sliding) return conv.TurnStarts[t];
        if (t == turns - 1) t--; // the newest turn keeps its own message
        while (t > 0 && !conv.CleanStart(conv.TurnStarts[t])) t--;
        return t <= 0 ? 0 : conv.TurnStarts[t];
    }

    /// <summary>
    /// How many turns a summarization checkpoint replaces (0: none): a multiple of <see cref="CompactionPolicy.SummaryEvery"/> that leaves the
    /// kept turns (and the newest) verbatim. Cache-aware, replaying the conversation's history, it steps to the next checkpoint only when the
    /// tokens it removes, read from the cache over the expected remaining turns, outweigh writing the cache again (the summary changes the
    /// conversation's head) plus the summary call (<paramref name="summaryInput"/> and <paramref name="summaryOutput"/>: its rates over the
    /// served model's input rate).
    /// </summary>
    internal static (int Turns, int Previous) SummaryTurns(Conversation conv, CompactionPolicy policy, CacheRates rates, double summaryInput, double summaryOutput)
    {
        var turns = conv.TurnStarts.Count;
        int cut = 0, previous = 0;
        var premium = Math.Max(0, rates.Write - rates.Read);
        for (var n = policy.KeepTurns + 1; n <= turns; n++)
        {
            if (n == turns) previous = cut;
            var t = (n - policy.KeepTurns) / policy.SummaryEvery * policy.SummaryEvery;
            if (t == n - 1) t -= policy.SummaryEvery; // the newest turn keeps its own message
            while (t > 0 && !conv.CleanStart(conv.TurnStarts[t])) t -= policy.SummaryEvery;
            if (t <= cut) continue;
            var end = n < turns ? conv.TurnStarts[n] : conv.Messages.Count;
            if (conv.Tokens(0, end) < policy.TriggerTokens) continue;
            if (!policy.CacheAware) { cut = t; continue; }
            var first = Math.Max(conv.FirstConversational, 0);
            var saving = conv.Tokens(cut == 0 ? first : conv.TurnStarts[cut], conv.TurnStarts[t]) - (cut == 0 ? policy.SummaryMaxTokens : 0);
            if (saving <= 0) continue;
            var rewrite = Math.Max(0, conv.Tokens(first, conv.TurnStarts[n - 1]) - saving);
            var summaryCost = conv.Tokens(first, conv.TurnStarts[t]) * summaryInput + policy.SummaryMaxTokens * summaryOutput;
            if (saving * rates.Read * policy.ExpectedRemainingTurns >= rewrite * premium + summaryCost) cut = t;
        }
        return (cut, previous);
    }

    /// <summary>Whether a summarization checkpoint moved from <paramref name="previous"/> to <paramref name="turns"/> turns on this call (the first of its turn): then it writes the cache again from the summary on.</summary>
    internal static bool SummaryMoved(Conversation conv, int previous, int turns) =>
        turns > 0 && Moved(conv, previous == 0 ? 0 : conv.TurnStarts[previous], conv.TurnStarts[turns]);

    /// <summary>Replaces the first <paramref name="turns"/> turns of <paramref name="body"/> with <paramref name="summary"/> (null when the conversation has no more turns than that).</summary>
    /// <param name="moved">The checkpoint moved on this call (<see cref="SummaryMoved"/>): the call re-writes the cache from the summary on.</param>
    public CompactionOutcome? ApplySummary(JsonObject body, bool anthropic, int turns, string summary, string model, bool moved = false)
    {
        if (turns <= 0 || body["messages"] is not JsonArray messages || Conversation.Read(messages, anthropic) is not { } conv || conv.TurnStarts.Count <= turns) return null;
        var cut = conv.TurnStarts[turns];
        if (!conv.CleanStart(cut)) return null;
        var header = $"[Summary of the earlier conversation ({turns} {(turns == 1 ? "turn" : "turns")}), by Bursar]\n{summary}";
        var first = conv.FirstConversational;
        // a checkpoint that moved re-writes from the summary to the newest turn
        return ReplaceHead(messages, conv, cut, anthropic, model, header, CompactionPolicy.Summarize, turns) is { } o
            ? Rewrite(o, messages, moved ? first : -1, model) : null;
    }

    /// <summary>
    /// Retrieval, before the edit: where the boundary falls (as a sliding window's) and, of the older turns a window may start at, the
    /// <see cref="CompactionPolicy.RetrieveTurns"/> most similar to the user turn of the boundary's step (the newest one without cache
    /// awareness), by cosine similarity of their embeddings. Null when nothing would be compacted.
    /// </summary>
    public static async ValueTask<RetrievalPlan?> PlanRetrievalAsync(JsonArray messages, bool anthropic, CompactionPolicy policy, CacheRates rates, TurnEmbeddings embeddings, CancellationToken ct)
    {
        if (Conversation.Read(messages, anthropic) is not { } conv || conv.TurnStarts.Count <= policy.KeepTurns) return null;
        var (cut, previous, at) = Boundary(conv, policy, sliding: true, rates);
        if (cut <= 0 || at <= 0) return null;
        var cutTurn = conv.TurnIndex(cut);
        var moved = cut != previous || !policy.CacheAware;
        var candidates = new List<int>();
        for (var t = 0; t < cutTurn; t++) if (conv.CleanStart(conv.TurnStarts[t])) candidates.Add(t);
        if (policy.RetrieveTurns == 0 || candidates.Count == 0) return new RetrievalPlan(cutTurn, [], moved);
        var query = Conversation.Text(conv.Messages[conv.TurnStarts[at - 1]]!["content"]);
        if (query.Length == 0) return new RetrievalPlan(cutTurn, [], moved);
        var texts = new string[candidates.Count + 1];
        texts[0] = query;
        for (var k = 0; k < candidates.Count; k++)
        {
            var transcript = conv.Transcript(conv.TurnStarts[candidates[k]], conv.TurnStarts[candidates[k] + 1]);
            texts[k + 1] = transcript.Length <= TurnEmbeddings.MaxChars ? transcript : transcript[..TurnEmbeddings.MaxChars];
        }
        if (await embeddings.EmbedAsync(texts, ct).ConfigureAwait(false) is not { } vectors) return null;
        var scored = new List<(float Score, int Turn)>(candidates.Count);
        for (var k = 0; k < candidates.Count; k++)
            if (vectors[k + 1].Length == vectors[0].Length && vectors[0].Length > 0)
                scored.Add((System.Numerics.Tensors.TensorPrimitives.CosineSimilarity(vectors[0], vectors[k + 1]), candidates[k]));
        // the most similar first; on a tie the newer turn
        scored.Sort((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : b.Turn.CompareTo(a.Turn));
        var kept = scored.Where(x => x.Score > 0).Take(policy.RetrieveTurns).Select(x => x.Turn).Order().ToArray();
        return new RetrievalPlan(cutTurn, kept, moved);
    }

    /// <summary>
    /// Retrieval's edit: the first <see cref="RetrievalPlan.Turns"/> turns are replaced by a sliding window's header, except the turns the
    /// plan keeps, which stay verbatim in their place (whole turns: a tool call and its result stay together). Null when nothing changed.
    /// </summary>
    public CompactionOutcome? ApplyRetrieval(JsonObject body, bool anthropic, RetrievalPlan plan, string model)
    {
        if (plan.Turns <= 0 || body["messages"] is not JsonArray messages || Conversation.Read(messages, anthropic) is not { } conv || conv.TurnStarts.Count <= plan.Turns) return null;
        var cut = conv.TurnStarts[plan.Turns];
        if (!conv.CleanStart(cut)) return null;
        var keep = new bool[messages.Count];
        var retained = 0;
        foreach (var t in plan.Retained)
        {
            if (t < 0 || t >= plan.Turns || !conv.CleanStart(conv.TurnStarts[t])) continue;
            retained++;
            for (var i = conv.TurnStarts[t]; i < conv.TurnStarts[t + 1]; i++) keep[i] = true;
        }
        var dropped = plan.Turns - retained;
        var header = new StringBuilder("[Earlier conversation, compacted by Bursar: ").Append(dropped).Append(dropped == 1 ? " turn" : " turns");
        if (retained > 0) header.Append("; ").Append(retained).Append(retained == 1 ? " earlier turn relevant to this one is" : " earlier turns relevant to this one are").Append(" kept in full");
        header.Append(']');
        for (var i = 0; i < cut; i++) if (!conv.IsSystem(i) && !keep[i]) header.Append(conv.HeaderLine(i));
        if (ReplaceHead(messages, conv, cut, anthropic, model, header.ToString(), CompactionPolicy.Retrieval, dropped, keep) is not { } outcome) return null;
        // a moved boundary (or a new choice of turns) re-writes the cache from the header up to the newest turn, as compacted
        return Rewrite(outcome, messages, plan.Moved ? Math.Max(conv.FirstConversational, 0) : -1, model);
    }

    private CompactionOutcome? ReplaceHead(JsonArray messages, Conversation conv, int cut, bool anthropic, string model, string text, string strategy, int turns, bool[]? keep = null)
    {
        long before = 0;
        var drop = new List<int>();
        for (var i = 0; i < cut; i++)
        {
            if (conv.IsSystem(i) || keep?[i] == true) continue;
            drop.Add(i);
            before += MessageTokens(model, messages[i]);
        }
        // the header is a message of its own on OpenAI (with its framing), a text block of a kept message on Anthropic
        var after = Count(model, text) + (anthropic ? 0 : TokenCounter.OpenAIMessageOverhead);
        // a header no shorter than what it replaces would only move the prefix (and lose the provider cache): no compaction then
        if (drop.Count == 0 || after >= before) return null;
        var first = drop[0];
        // the header opens the first message after the first dropped one that stays (a turn start: drops are whole turns)
        var next = first + 1;
        while (next < cut && !(keep?[next] == true)) next++;
        var kept = messages[next]!.AsObject();
        for (var k = drop.Count - 1; k >= 0; k--) messages.RemoveAt(drop[k]);
        if (anthropic)
        {
            // Anthropic alternates user and assistant: the header opens the first kept user turn as its own text block
            var content = kept["content"];
            var blocks = content is JsonArray a ? a : new JsonArray(new JsonObject { ["type"] = "text", ["text"] = content?.DeepClone() });
            if (content is not JsonArray) kept["content"] = blocks;
            blocks.Insert(0, new JsonObject { ["type"] = "text", ["text"] = text });
        }
        else
        {
            messages.Insert(first, new JsonObject { ["role"] = "user", ["content"] = text });
        }
        return new CompactionOutcome(strategy, before - after, turns, 0);
    }

    private CompactionOutcome? Prune(Conversation conv, int cut, string model, CompactionPolicy policy)
    {
        long removed = 0;
        var pruned = 0;
        foreach (var r in conv.Results)
        {
            if (r.Message >= cut || r.ApproxTokens <= policy.MinPrunedTokens) continue;
            var old = r.Owner[r.Property];
            var before = Count(model, old);
            var stub = Stub(r.Name, before, old);
            var after = Count(model, stub);
            if (after >= before) continue;
            r.Owner[r.Property] = stub;
            removed += before - after;
            pruned++;
        }
        return pruned == 0 ? null : new CompactionOutcome(CompactionPolicy.PruneToolResults, removed, conv.TurnIndex(cut), pruned);
    }

    private CompactionOutcome? Slide(JsonArray messages, Conversation conv, int cut, bool anthropic, string model)
    {
        var turns = conv.TurnIndex(cut);
        var header = new StringBuilder("[Earlier conversation, compacted by Bursar: ").Append(turns).Append(turns == 1 ? " turn" : " turns").Append(']');
        for (var i = 0; i < cut; i++) if (!conv.IsSystem(i)) header.Append(conv.HeaderLine(i));
        return ReplaceHead(messages, conv, cut, anthropic, model, header.ToString(), CompactionPolicy.SlidingWindow, turns);
    }

    /// <summary>The tokens a provider bills for a message (<see cref="PromptTokenEstimator.AppendMessage"/> and its framing), not its JSON: a tool result's escaped quotes are not billed.</summary>
    private long MessageTokens(string model, JsonNode? message)
    {
        var text = new StringBuilder();
        var extra = PromptTokenEstimator.AppendMessage(message, text);
        return Count(model, text.ToString()) + extra + TokenCounter.OpenAIMessageOverhead;
    }

    private int Count(string model, JsonNode? node) => node switch
    {
        null => 0,
        JsonValue v when v.TryGetValue<string>(out var s) => Count(model, s),
        _ => Count(model, node.ToJsonString()),
    };

    /// <summary>
    /// Token counts of texts seen before (a conversation re-sends its older turns on every call, so the same tool results are counted
    /// again and again): keyed by the model, the text's length and its 64-bit hash; bounded, cleared when full.
    /// </summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(string, int, ulong), int> _counts = new();
    private const int CountCacheEntries = 16_384;

    private int Count(string model, string text)
    {
        if (text.Length < 256) return counter.Count(model, text);
        var key = (model, text.Length, System.IO.Hashing.XxHash3.HashToUInt64(System.Runtime.InteropServices.MemoryMarshal.AsBytes(text.AsSpan())));
        if (_counts.TryGetValue(key, out var n)) return n;
        if (_counts.Count >= CountCacheEntries) _counts.Clear();
        n = counter.Count(model, text);
        _counts[key] = n;
        return n;
    }

    /// <summary>The stub a pruned result leaves: the tool, the tokens removed, and the identifiers it held (ids, codes, dates, amounts), so later turns can still name them.</summary>
    internal static string Stub(string name, int tokens, JsonNode? result)
    {
        var ids = Identifiers(result);
        var sb = new StringBuilder("[Bursar pruned this ").Append(name).Append(" result: ").Append(tokens.ToString(CultureInfo.InvariantCulture)).Append(" tokens removed");
        if (ids.Count > 0) sb.Append("; it named: ").AppendJoin(", ", ids);
        return sb.Append(']').ToString();
    }

    /// <summary>
    /// Identifier-like values of a tool result (strings with a digit, or short upper-case codes; numbers), at most 48, each once, in
    /// document order. Read with <see cref="Utf8JsonReader"/>, not a parsed tree: a sliding window reads every older result on every call.
    /// </summary>
    internal static List<string> Identifiers(JsonNode? result)
    {
        var found = new List<string>();
        var text = result is JsonValue v && v.TryGetValue<string>(out var s) ? s : result?.ToJsonString() ?? "";
        if (text.Length == 0 || text[0] is not ('{' or '[')) return found;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var max = Encoding.UTF8.GetMaxByteCount(text.Length);
        byte[]? rented = max > 4096 ? System.Buffers.ArrayPool<byte>.Shared.Rent(max) : null;
        try
        {
            Span<byte> buffer = rented ?? stackalloc byte[max];
            var reader = new Utf8JsonReader(buffer[..Encoding.UTF8.GetBytes(text, buffer)]);
            while (found.Count < 48 && reader.Read())
            {
                var str = reader.TokenType switch
                {
                    JsonTokenType.String => reader.GetString(),
                    JsonTokenType.Number => Encoding.UTF8.GetString(reader.ValueSpan),
                    _ => null,
                };
                if (str is not null && IsIdentifier(str) && seen.Add(str)) found.Add(str);
            }
            // a text that only starts like JSON: nothing is read from it (as before: only a whole document counts)
            while (reader.Read()) { }
        }
        catch (JsonException) { found.Clear(); }
        finally
        {
            if (rented is not null) System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
        return found;
    }

    private static bool IsIdentifier(string s)
    {
        if (s.Length is 0 or > 40 || s.Contains(' ', StringComparison.Ordinal)) return false;
        var digit = false;
        var allUpper = true;
        foreach (var c in s)
        {
            if (char.IsAsciiDigit(c)) digit = true;
            if (!char.IsAsciiLetterUpper(c)) allUpper = false;
        }
        return digit || (allUpper && s.Length is >= 2 and <= 6);
    }
}
