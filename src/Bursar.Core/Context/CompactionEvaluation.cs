using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Bursar.Core.Context;

/// <summary>One recorded agent conversation (tau-bench): its OpenAI-format messages and the task's ground-truth actions.</summary>
public sealed record Trajectory(string Id, JsonArray Messages, IReadOnlyList<(string Name, JsonNode? Arguments)> Actions, double Reward)
{
    /// <summary>The calls the agent made, as message indexes: the request of call <c>i</c> is every message before assistant message <c>i</c>.</summary>
    public IEnumerable<int> CallPoints()
    {
        for (var i = 1; i < Messages.Count; i++)
            if (Messages[i]?["role"]?.GetValue<string>() == "assistant") yield return i;
    }

    /// <summary>The OpenAI chat request the agent sent before message <paramref name="end"/>.</summary>
    public JsonObject Request(int end, JsonArray tools, string model)
    {
        var messages = new JsonArray();
        for (var i = 0; i < end; i++) messages.Add(Clean(Messages[i]!.AsObject()));
        return new JsonObject { ["model"] = model, ["messages"] = messages, ["tools"] = tools.DeepClone(), ["temperature"] = 0, ["max_tokens"] = 256 };
    }

    /// <summary>A recorded message as a request carries it: role, content, tool calls, tool call id (the recording's extra fields dropped).</summary>
    private static JsonObject Clean(JsonObject m)
    {
        var o = new JsonObject { ["role"] = m["role"]!.DeepClone(), ["content"] = m["content"]?.DeepClone() };
        if (m["tool_calls"] is JsonArray { Count: > 0 } calls)
        {
            var list = new JsonArray();
            foreach (var c in calls)
                list.Add(new JsonObject { ["id"] = c!["id"]!.DeepClone(), ["type"] = "function", ["function"] = new JsonObject { ["name"] = c["function"]!["name"]!.DeepClone(), ["arguments"] = c["function"]!["arguments"]!.DeepClone() } });
            o["tool_calls"] = list;
        }
        if (m["tool_call_id"] is { } id) o["tool_call_id"] = id.DeepClone();
        return o;
    }
}

/// <summary>The fidelity proxy over a set of conversations: argument values of ground-truth actions seen before the action, and still there after compaction.</summary>
public sealed record FidelityResult(int Actions, int ActionsTaken, long ValuesSeen, long ValuesRetained)
{
    public double Retained => ValuesSeen == 0 ? 1 : (double)ValuesRetained / ValuesSeen;
}

/// <summary>
/// Compaction measured on recorded agent conversations (tau-bench airline: system policy, 14 tools, tool calls and results).
/// Fidelity proxy: for every ground-truth action of a task (<c>info.task.actions</c>), found at the agent's first call of that tool after the
/// previous action's, the share of the action's argument values that appear earlier in the conversation (outside the system prompt) and are
/// still in the compacted context of that call.
/// </summary>
public static class CompactionEvaluation
{
    public static IReadOnlyList<Trajectory> Load(string path)
    {
        using var stream = File.OpenRead(path);
        var root = JsonNode.Parse(stream)!.AsArray();
        var list = new List<Trajectory>(root.Count);
        var n = 0;
        foreach (var t in root)
        {
            var actions = new List<(string, JsonNode?)>();
            if (t?["info"]?["task"]?["actions"] is JsonArray a)
                foreach (var x in a) actions.Add((x!["name"]!.GetValue<string>(), x["kwargs"]?.DeepClone()));
            var id = t?["task_id"]?.ToJsonString() ?? n.ToString(CultureInfo.InvariantCulture);
            list.Add(new Trajectory($"{n++}:{id}", t!["traj"]!.AsArray(), actions, t["reward"]?.GetValue<double>() ?? 0));
        }
        return list;
    }

    public static JsonArray LoadTools(string path)
    {
        using var stream = File.OpenRead(path);
        return JsonNode.Parse(stream)!.AsArray();
    }

    /// <summary>The fidelity of <paramref name="policy"/> (null: no compaction) on <paramref name="trajectories"/>, compacted as the gateway compacts an OpenAI-bound request.</summary>
    /// <param name="embeddings">Retrieval's encoder (the gateway's: the semantic cache's); without one retrieval is read as its sliding window.</param>
    public static async Task<FidelityResult> FidelityAsync(IEnumerable<Trajectory> trajectories, JsonArray tools, CompactionPolicy? policy, Compactor compactor, string model, CacheRates rates,
        TurnEmbeddings? embeddings = null, CancellationToken ct = default)
    {
        int actions = 0, taken = 0;
        long seen = 0, retained = 0;
        foreach (var t in trajectories)
        {
            var from = 0;
            foreach (var (name, args) in t.Actions)
            {
                actions++;
                var at = FirstCall(t, name, from);
                if (at < 0) continue;
                taken++;
                from = at + 1;
                var request = t.Request(at, tools, model);
                var before = Text(request);
                if (policy is { Strategy: CompactionPolicy.Retrieval } && embeddings is not null
                    && await Compactor.PlanRetrievalAsync(request["messages"]!.AsArray(), anthropic: false, policy, rates, embeddings, ct).ConfigureAwait(false) is { } plan)
                    compactor.ApplyRetrieval(request, anthropic: false, plan, model);
                else if (policy is not null) compactor.Compact(request, anthropic: false, policy, model, rates, ct);
                var after = Text(request);
                foreach (var value in Values(args))
                {
                    if (!before.Contains(value, StringComparison.OrdinalIgnoreCase)) continue;
                    seen++;
                    if (after.Contains(value, StringComparison.OrdinalIgnoreCase)) retained++;
                }
            }
        }
        return new FidelityResult(actions, taken, seen, retained);
    }

    /// <summary>The index of the first assistant message at or after <paramref name="from"/> that calls <paramref name="tool"/> (-1: none).</summary>
    private static int FirstCall(Trajectory t, string tool, int from)
    {
        for (var i = Math.Max(from, 1); i < t.Messages.Count; i++)
            if (t.Messages[i]?["tool_calls"] is JsonArray calls && calls.Any(c => c?["function"]?["name"]?.GetValue<string>() == tool)) return i;
        return -1;
    }

    /// <summary>Everything a request's conversation says outside the system prompt: contents, tool calls and their arguments.</summary>
    internal static string Text(JsonObject request)
    {
        var sb = new StringBuilder();
        foreach (var m in request["messages"]!.AsArray())
        {
            if (m?["role"]?.GetValue<string>() is "system" or "developer") continue;
            if (m!["content"] is JsonValue v && v.TryGetValue<string>(out var s)) sb.Append(s).Append('\n');
            else if (m["content"] is JsonArray parts) sb.Append(parts.ToJsonString()).Append('\n');
            if (m["tool_calls"] is JsonArray calls)
                foreach (var c in calls) sb.Append(c?["function"]?["arguments"]?.GetValue<string>()).Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>The scalar argument values of an action, as text (strings as they are, numbers in invariant form; booleans and nulls skipped).</summary>
    internal static IEnumerable<string> Values(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject o:
                foreach (var (_, child) in o) foreach (var v in Values(child)) yield return v;
                break;
            case JsonArray a:
                foreach (var child in a) foreach (var v in Values(child)) yield return v;
                break;
            case JsonValue value:
                switch (value.GetValueKind())
                {
                    case JsonValueKind.String:
                        var s = value.GetValue<string>();
                        if (s.Length > 0) yield return s;
                        break;
                    case JsonValueKind.Number:
                        yield return value.ToJsonString();
                        break;
                }
                break;
        }
    }
}
