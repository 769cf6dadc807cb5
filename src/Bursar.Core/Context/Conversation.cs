using System.Text;
using System.Text.Json.Nodes;
using Bursar.Core.Tokens;

namespace Bursar.Core.Context;

/// <summary>A tool result in a conversation: the message it is in, where its content sits, the tool that produced it, and its rough size.</summary>
internal sealed record ToolResult(int Message, JsonObject Owner, string Property, string Name, long ApproxTokens);

/// <summary>
/// A conversation read for compaction, in either dialect: which messages are system messages, where each turn starts (a user message
/// that is not only tool results), the tool results with the tools that produced them, and rough token sizes (4 characters a token
/// of the text the provider bills, <see cref="PromptTokenEstimator.AppendMessage"/>) for weighing steps. Reading never changes the messages.
/// </summary>
internal sealed class Conversation : ICompactionSeries
{
    private readonly JsonArray _messages;
    private readonly bool _anthropic;
    private readonly long[] _prefix;
    private readonly bool[] _system;
    private readonly bool[] _clean;
    private long[]? _header;
    private string?[]? _lines;
    /// <summary>Tool names by call id (OpenAI <c>tool_calls[].id</c>, Anthropic <c>tool_use.id</c>).</summary>
    private readonly Dictionary<string, string> _names = new(StringComparer.Ordinal);

    private Conversation(JsonArray messages, bool anthropic)
    {
        _messages = messages;
        _anthropic = anthropic;
        _prefix = new long[messages.Count + 1];
        _system = new bool[messages.Count];
        _clean = new bool[messages.Count];
    }

    public JsonArray Messages => _messages;
    public List<int> TurnStarts { get; } = [];
    IReadOnlyList<int> ICompactionSeries.TurnStarts => TurnStarts;
    int ICompactionSeries.Count => _messages.Count;
    public List<ToolResult> Results { get; } = [];
    public int FirstConversational { get; private set; } = -1;

    /// <summary>The conversation, or null when a message is not an object with a string role (the provider names that fault).</summary>
    public static Conversation? Read(JsonArray messages, bool anthropic)
    {
        var c = new Conversation(messages, anthropic);
        var names = c._names;
        var billed = new StringBuilder();
        for (var i = 0; i < messages.Count; i++)
        {
            if (messages[i] is not JsonObject m || m["role"] is not JsonValue rv || !rv.TryGetValue<string>(out var role)) return null;
            // what the provider bills for the message (its text, tool calls and results, and framing), 4 characters a token
            billed.Clear();
            var extra = PromptTokenEstimator.AppendMessage(m, billed);
            c._prefix[i + 1] = c._prefix[i] + billed.Length / 4 + extra + TokenCounter.OpenAIMessageOverhead;
            c._system[i] = role is "system" or "developer";
            if (!c._system[i] && c.FirstConversational < 0) c.FirstConversational = i;
            var content = m["content"];
            switch (role)
            {
                case "assistant":
                    if (m["tool_calls"] is JsonArray calls)
                        foreach (var tc in calls)
                            if (tc?["id"] is JsonValue id && id.TryGetValue<string>(out var cid) && tc["function"]?["name"] is JsonValue fn && fn.TryGetValue<string>(out var name)) names[cid] = name;
                    if (content is JsonArray blocks)
                        foreach (var b in blocks)
                            if (Type(b) == "tool_use" && b!["id"] is JsonValue id && id.TryGetValue<string>(out var uid) && b["name"] is JsonValue nv && nv.TryGetValue<string>(out var name)) names[uid] = name;
                    break;
                case "tool":
                    var callId = m["tool_call_id"] is JsonValue tv && tv.TryGetValue<string>(out var t) ? t : "";
                    c.Results.Add(new ToolResult(i, m, "content", names.GetValueOrDefault(callId, "tool"), (content?.ToJsonString().Length ?? 0) / 4));
                    break;
                case "user":
                    var onlyResults = content is JsonArray parts && parts.Count > 0;
                    var anyResult = false;
                    if (content is JsonArray ps)
                    {
                        foreach (var p in ps)
                        {
                            if (Type(p) == "tool_result")
                            {
                                anyResult = true;
                                var useId = p!["tool_use_id"] is JsonValue uv && uv.TryGetValue<string>(out var u) ? u : "";
                                c.Results.Add(new ToolResult(i, p.AsObject(), "content", names.GetValueOrDefault(useId, "tool"), (p["content"]?.ToJsonString().Length ?? 0) / 4));
                            }
                            else onlyResults = false;
                        }
                    }
                    if (!anthropic || !onlyResults) c.TurnStarts.Add(i);
                    c._clean[i] = !anyResult;
                    break;
            }
        }
        return c;
    }

    private static string? Type(JsonNode? block) => block?["type"] is JsonValue v && v.TryGetValue<string>(out var t) ? t : null;

    public bool IsSystem(int i) => _system[i];

    /// <summary>A user turn a sliding window may start at: on Anthropic one with no tool results (their calls would be cut away).</summary>
    public bool CleanStart(int i) => !_anthropic || _clean[i];

    public long Tokens(int from, int to) => _prefix[Math.Clamp(to, 0, _messages.Count)] - _prefix[Math.Clamp(from, 0, _messages.Count)];

    /// <summary>How many turns start before <paramref name="cut"/>.</summary>
    public int TurnIndex(int cut)
    {
        var n = 0;
        foreach (var t in TurnStarts) if (t < cut) n++;
        return n;
    }

    /// <summary>The rough tokens compacting messages [<paramref name="from"/>, <paramref name="to"/>) removes.</summary>
    public long Saving(int from, int to, bool sliding, int minPruned, int stubTokens)
    {
        long saving = 0;
        if (sliding)
        {
            var header = HeaderSizes();
            for (var i = from; i < to; i++) if (!_system[i]) saving += _prefix[i + 1] - _prefix[i] - header[i];
            return saving;
        }
        foreach (var r in Results)
            if (r.Message >= from && r.Message < to && r.ApproxTokens > minPruned) saving += r.ApproxTokens - stubTokens;
        return saving;
    }

    /// <summary>The rough tokens each message's line in a sliding window's header takes (made on first use: only the sliding window weighs them).</summary>
    private long[] HeaderSizes()
    {
        if (_header is not null) return _header;
        var sizes = new long[_messages.Count];
        for (var i = 0; i < sizes.Length; i++) if (!_system[i]) sizes[i] = HeaderLine(i).Length / 4;
        return _header = sizes;
    }

    /// <summary>Message <paramref name="i"/>'s line in a sliding window's header (<see cref="Describe"/>), made once: weighing the steps and writing the header read the same lines.</summary>
    public string HeaderLine(int i)
    {
        _lines ??= new string?[_messages.Count];
        if (_lines[i] is { } line) return line;
        var sb = new StringBuilder();
        Describe(i, sb);
        return _lines[i] = sb.ToString();
    }

    /// <summary>The first message in [<paramref name="from"/>, <paramref name="to"/>) holding a result big enough to prune (-1: none).</summary>
    public int FirstPrunable(int from, int to, int minPruned)
    {
        foreach (var r in Results)
            if (r.Message >= from && r.Message < to && r.ApproxTokens > minPruned) return r.Message;
        return -1;
    }

    /// <summary>One line of a sliding window's header for message <paramref name="i"/>: what the user asked, what the assistant said and called (with its arguments), what a tool named.</summary>
    public void Describe(int i, StringBuilder sb)
    {
        var m = _messages[i]!.AsObject();
        var role = m["role"]!.GetValue<string>();
        var content = m["content"];
        switch (role)
        {
            case "user":
            {
                var text = Text(content);
                if (text.Length > 0) sb.Append("\n- user: ").Append(Clip(text, 240));
                if (content is JsonArray parts)
                    foreach (var p in parts)
                        if (Type(p) == "tool_result") Result(Name(p!["tool_use_id"]), p["content"], sb);
                break;
            }
            case "assistant":
            {
                var text = Text(content);
                if (text.Length > 0) sb.Append("\n- assistant: ").Append(Clip(text, 160));
                if (m["tool_calls"] is JsonArray calls)
                    foreach (var tc in calls)
                        sb.Append("\n- assistant called ").Append(tc?["function"]?["name"]?.ToString()).Append(' ').Append(Clip(tc?["function"]?["arguments"]?.ToString() ?? "", 400));
                if (content is JsonArray blocks)
                    foreach (var b in blocks)
                        if (Type(b) == "tool_use") sb.Append("\n- assistant called ").Append(b!["name"]?.ToString()).Append(' ').Append(Clip(b["input"]?.ToJsonString() ?? "", 400));
                break;
            }
            case "tool":
                Result(Name(m["tool_call_id"]), content, sb);
                break;
        }
    }

    private string Name(JsonNode? id) => id is JsonValue v && v.TryGetValue<string>(out var key) ? _names.GetValueOrDefault(key, "tool") : "tool";

    private static void Result(string name, JsonNode? content, StringBuilder sb)
    {
        var ids = Compactor.Identifiers(content);
        sb.Append("\n- ").Append(name).Append(" returned");
        if (ids.Count > 0) sb.Append(": ").AppendJoin(", ", ids.Take(24));
        else sb.Append(' ').Append(Clip(Text(content), 120));
    }

    /// <summary>What a summarizer reads of messages [<paramref name="from"/>, <paramref name="to"/>): every turn's text, tool calls with their arguments, tool results in full.</summary>
    public string Transcript(int from, int to)
    {
        var sb = new StringBuilder();
        for (var i = Math.Max(0, from); i < to && i < _messages.Count; i++)
        {
            if (_system[i]) continue;
            var m = _messages[i]!.AsObject();
            var role = m["role"]!.GetValue<string>();
            var content = m["content"];
            var text = Text(content);
            if (text.Length > 0) sb.Append(role == "tool" ? Name(m["tool_call_id"]) + " returned" : role).Append(": ").Append(text).Append('\n');
            if (m["tool_calls"] is JsonArray calls)
                foreach (var tc in calls) sb.Append("assistant called ").Append(tc?["function"]?["name"]?.ToString()).Append(' ').Append(tc?["function"]?["arguments"]?.ToString()).Append('\n');
            if (content is JsonArray blocks)
                foreach (var b in blocks)
                {
                    if (Type(b) == "tool_use") sb.Append("assistant called ").Append(b!["name"]?.ToString()).Append(' ').Append(b["input"]?.ToJsonString()).Append('\n');
                    if (Type(b) == "tool_result") sb.Append(Name(b!["tool_use_id"])).Append(" returned: ").Append(b["content"] is JsonValue rv && rv.TryGetValue<string>(out var rs) ? rs : Text(b["content"])).Append('\n');
                }
        }
        return sb.ToString();
    }

    /// <summary>The text of a content: a string, or its text parts and blocks.</summary>
    public static string Text(JsonNode? content)
    {
        switch (content)
        {
            case JsonValue v when v.TryGetValue<string>(out var s):
                return s;
            case JsonArray parts:
                var sb = new StringBuilder();
                foreach (var p in parts)
                    if (Type(p) == "text" && p!["text"] is JsonValue t && t.TryGetValue<string>(out var text)) sb.Append(sb.Length > 0 ? " " : "").Append(text);
                return sb.ToString();
            default:
                return "";
        }
    }

    /// <summary>The text on one line (runs of white space as one space, trimmed), cut at <paramref name="max"/> characters with an ellipsis; one pass that stops at the cut.</summary>
    private static string Clip(string text, int max)
    {
        var sb = new StringBuilder(Math.Min(text.Length, max + 1));
        var space = false;
        foreach (var c in text)
        {
            if (char.IsWhiteSpace(c)) { space = sb.Length > 0; continue; }
            if (space) { sb.Append(' '); space = false; }
            if (sb.Length >= max) return string.Concat(sb.ToString(0, max), "…");
            sb.Append(c);
        }
        return sb.ToString();
    }
}
