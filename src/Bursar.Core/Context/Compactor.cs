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

/// <summary>What a compaction did to one request.</summary>
public sealed record CompactionOutcome(string Strategy, long TokensRemoved, int CompactedTurns, int PrunedResults)
{
    /// <summary>
    /// Tokens this call writes to the provider's prompt cache again because its compaction boundary moved since the conversation's
    /// previous turn (0 when it did not move, or on a later call of the same turn, which reads what the first one wrote).
    /// </summary>
    public long RewrittenTokens { get; init; }
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
        var sliding = policy.Strategy == CompactionPolicy.SlidingWindow;
        var (cut, previous) = Boundary(conv, policy, sliding, rates);
        if (cut <= 0) return null;
        ct.ThrowIfCancellationRequested();
        // measured before the messages change: what moving the boundary makes this call write to the cache again
        var rewritten = Rewritten(conv, previous, cut, sliding, policy.MinPrunedTokens);
        var outcome = sliding ? Slide(messages, conv, cut, anthropic, model) : Prune(conv, cut, model, policy);
        return outcome is null ? null : outcome with { RewrittenTokens = rewritten };
    }

    /// <summary>
    /// The tokens a call re-writes to the cache when its boundary moved from <paramref name="previous"/> (the previous turn's) to
    /// <paramref name="cut"/>: from the first changed message (the header, or the first newly pruned result) up to what the previous turn
    /// sent, less what the step removed. Only the first call of a turn (its newest message is the user's) pays it.
    /// </summary>
    internal static long Rewritten(Conversation conv, int previous, int cut, bool headerChanges, int minPruned)
    {
        var turns = conv.TurnStarts.Count;
        if (cut == previous || turns < 2 || conv.TurnStarts[^1] != conv.Messages.Count - 1) return 0;
        var changed = headerChanges ? conv.FirstConversational : conv.FirstPrunable(previous, cut, minPruned);
        if (changed < 0) return 0;
        var saving = conv.Saving(previous, cut, headerChanges, minPruned, StubTokens);
        return Math.Max(0, conv.Tokens(changed, conv.TurnStarts[turns - 1]) - saving);
    }

    /// <summary>
    /// Where compaction stops: every message before the returned index is compacted. Without cache awareness, the start of the oldest kept
    /// turn. With it, the boundary the conversation's own history gives: replaying its turns one by one, the boundary steps to the newest
    /// candidate only when the tokens that step removes, read from the cache for the expected remaining turns, outweigh writing the cache
    /// again from the first changed message up to what the previous call sent (the newest turn is written either way); the same conversation prefix therefore yields the same boundary on every later call.
    /// </summary>
    internal static (int Cut, int Previous) Boundary(Conversation conv, CompactionPolicy policy, bool sliding, CacheRates rates)
    {
        var turns = conv.TurnStarts.Count;
        if (!policy.CacheAware) return (Candidate(conv, turns, policy.KeepTurns, sliding), Candidate(conv, turns - 1, policy.KeepTurns, sliding));
        int cut = 0, previous = 0;
        var premium = Math.Max(0, rates.Write - rates.Read);
        for (var n = policy.KeepTurns + 1; n <= turns; n++)
        {
            if (n == turns) previous = cut;
            var end = n < turns ? conv.TurnStarts[n] : conv.Messages.Count;
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
            if (saving * rates.Read * policy.ExpectedRemainingTurns >= rewrite * premium) cut = candidate;
        }
        return (cut, previous);
    }

    /// <summary>The boundary that keeps the last <paramref name="keep"/> of the first <paramref name="turns"/> turns (a sliding window never cuts at the newest turn, and on Anthropic only at a user turn without tool results).</summary>
    private static int Candidate(Conversation conv, int turns, int keep, bool sliding)
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

    /// <summary>What a summarization checkpoint that moved from <paramref name="previous"/> to <paramref name="turns"/> turns makes this call write to the cache again.</summary>
    internal static long SummaryRewritten(Conversation conv, int previous, int turns)
    {
        if (turns == previous || turns <= 0) return 0;
        return Rewritten(conv, previous == 0 ? 0 : conv.TurnStarts[previous], conv.TurnStarts[turns], headerChanges: true, minPruned: 0);
    }

    /// <summary>Replaces the first <paramref name="turns"/> turns of <paramref name="body"/> with <paramref name="summary"/> (null when the conversation has no more turns than that).</summary>
    public CompactionOutcome? ApplySummary(JsonObject body, bool anthropic, int turns, string summary, string model, long rewritten = 0)
    {
        if (turns <= 0 || body["messages"] is not JsonArray messages || Conversation.Read(messages, anthropic) is not { } conv || conv.TurnStarts.Count <= turns) return null;
        var cut = conv.TurnStarts[turns];
        if (!conv.CleanStart(cut)) return null;
        var header = $"[Summary of the earlier conversation ({turns} {(turns == 1 ? "turn" : "turns")}), by Bursar]\n{summary}";
        return ReplaceHead(messages, conv, cut, anthropic, model, header, CompactionPolicy.Summarize, turns) is { } o ? o with { RewrittenTokens = rewritten } : null;
    }

    private CompactionOutcome? ReplaceHead(JsonArray messages, Conversation conv, int cut, bool anthropic, string model, string text, string strategy, int turns)
    {
        long before = 0;
        var drop = new List<int>();
        for (var i = 0; i < cut; i++)
        {
            if (conv.IsSystem(i)) continue;
            drop.Add(i);
            before += Count(model, messages[i]);
        }
        if (drop.Count == 0) return null;
        var first = drop[0];
        var kept = messages[cut]!.AsObject();
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
        var after = Count(model, text);
        return new CompactionOutcome(strategy, Math.Max(0, before - after), turns, 0);
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
        for (var i = 0; i < cut; i++) if (!conv.IsSystem(i)) conv.Describe(i, header);
        return ReplaceHead(messages, conv, cut, anthropic, model, header.ToString(), CompactionPolicy.SlidingWindow, turns);
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

    /// <summary>Identifier-like values of a tool result (strings with a digit, or short upper-case codes; numbers), at most 48, each once.</summary>
    internal static List<string> Identifiers(JsonNode? result)
    {
        var found = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var text = result is JsonValue v && v.TryGetValue<string>(out var s) ? s : result?.ToJsonString() ?? "";
        JsonNode? parsed = null;
        try { parsed = text.Length > 0 && (text[0] is '{' or '[') ? JsonNode.Parse(text) : null; }
        catch (JsonException) { parsed = null; }
        if (parsed is not null) Walk(parsed, found, seen);
        return found;

        static void Walk(JsonNode node, List<string> found, HashSet<string> seen)
        {
            if (found.Count >= 48) return;
            switch (node)
            {
                case JsonObject o:
                    foreach (var (_, child) in o) if (child is not null) Walk(child, found, seen);
                    break;
                case JsonArray a:
                    foreach (var child in a) if (child is not null) Walk(child, found, seen);
                    break;
                case JsonValue value:
                    var str = value.GetValueKind() switch
                    {
                        JsonValueKind.String => value.GetValue<string>(),
                        JsonValueKind.Number => value.ToJsonString(),
                        _ => null,
                    };
                    if (str is not null && IsIdentifier(str) && seen.Add(str)) found.Add(str);
                    break;
            }
        }
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
