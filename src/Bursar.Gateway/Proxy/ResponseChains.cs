using System.Collections.Concurrent;
using Bursar.Core.Keys;

namespace Bursar.Gateway.Proxy;

/// <summary>
/// The stored responses this gateway served (OpenAI Responses API): which deployment holds each one, whose it is, the
/// chain it belongs to, and how many tokens of context a call continuing it is billed again. Admission reserves a chained
/// call's stored context as input; a <c>previous_response_id</c> chain is a run (its first response's id) when the caller
/// names none; <c>GET</c>, <c>DELETE</c> and <c>input_items</c> go to the deployment that holds the response; another
/// tenant's response is not found. In-process and bounded (the oldest entries go first): a response this instance never
/// served is looked up on every OpenAI deployment, and reserved at the model's context window.
/// </summary>
public sealed class ResponseChains
{
    /// <summary>One stored response: the chain's first response, where it lives, whose it is and the context it carries.</summary>
    /// <param name="Conversation">For a response Bursar answered from a Claude model: the conversation so far as Responses items (Bursar keeps the state).</param>
    /// <param name="Stored">For such a response: the Responses object <c>GET</c> returns.</param>
    /// <param name="InputItems">For such a response: its own input items, for <c>input_items</c>.</param>
    public sealed record Entry(string Id, string Root, string Deployment, string Scope, long ContextTokens, string Model,
        System.Text.Json.Nodes.JsonArray? Conversation = null, byte[]? Stored = null, System.Text.Json.Nodes.JsonArray? InputItems = null);

    /// <summary>Most responses remembered. Default 100,000.</summary>
    public const int MaxEntries = 100_000;

    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly ConcurrentQueue<string> _order = new();

    /// <summary>Who may read and continue a response: the key's team, else its customer, else the key.</summary>
    public static string ScopeOf(VirtualKey key) => key.Team is not null ? "team:" + key.Team : key.Customer is not null ? "customer:" + key.Customer : "key:" + key.Id;

    public Entry? Find(string id) => _entries.TryGetValue(id, out var e) ? e : null;

    public int Count => _entries.Count;

    public void Add(Entry entry)
    {
        if (_entries.TryAdd(entry.Id, entry)) _order.Enqueue(entry.Id);
        else _entries[entry.Id] = entry;
        while (_order.Count > MaxEntries && _order.TryDequeue(out var old)) _entries.TryRemove(old, out _);
    }

    public void Remove(string id) => _entries.TryRemove(id, out _);

    /// <summary>The run a chain is: <c>resp:</c> and its first response's id (at most 128 characters, as tags are).</summary>
    public static string RunOf(string root)
    {
        var run = "resp:" + root;
        return run.Length <= Bursar.Core.Attribution.AttributionResolver.MaxTagLength ? run : run[..Bursar.Core.Attribution.AttributionResolver.MaxTagLength];
    }
}
