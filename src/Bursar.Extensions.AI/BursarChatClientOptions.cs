using Bursar.Core.Attribution;
using Bursar.Core.Keys;
using Microsoft.Extensions.AI;

namespace Bursar.Extensions.AI;

/// <summary>Options of one <see cref="BursarChatClient"/>. Copied when the client is built; change a clone, not the one in use.</summary>
public sealed class BursarChatClientOptions
{
    /// <summary>The key calls are attributed to and whose policy applies (budgets per key, downgrade model, unpriced policy). Default: an in-process key <c>in-process</c> that may set every tag and name any customer.</summary>
    public VirtualKey? Key { get; set; }
    /// <summary>Default tags of every call of this client (the scope and <c>ChatOptions.AdditionalProperties["bursar.*"]</c> override them).</summary>
    public string? Feature { get; set; }
    public string? Team { get; set; }
    public string? Customer { get; set; }
    public string? Task { get; set; }
    public string? Template { get; set; }
    /// <summary>The provider named on the ledger. Default: the inner client's <c>ChatClientMetadata.ProviderName</c>.</summary>
    public string? ProviderName { get; set; }

    /// <summary>
    /// Inner clients for other models, by model id or <c>prefix*</c> (e.g. <c>["claude-*"] = anthropicChatClient</c>): when
    /// a route serves another model than the one asked for, the call goes to the client that serves it; a model none
    /// lists goes to the client <c>UseBursar()</c> wraps. Default: none.
    /// </summary>
    public Dictionary<string, IChatClient> ModelClients { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>
    /// How long a call with <c>ChatOptions.AllowBackgroundResponses</c> may wait for its provider batch when it names no
    /// <c>bursar.defer</c> property (from <c>Bursar:Deferral:MinDelay</c> to 24 hours). Default 24 hours, the batch window.
    /// </summary>
    public TimeSpan BackgroundDelay { get; set; } = TimeSpan.FromHours(24);

    public BursarChatClientOptions Clone()
    {
        var copy = (BursarChatClientOptions)MemberwiseClone();
        copy.ModelClients = new Dictionary<string, IChatClient>(ModelClients, StringComparer.OrdinalIgnoreCase);
        return copy;
    }

    /// <summary>The client listed for <paramref name="model"/> (an exact id first, then the longest matching <c>prefix*</c>), or null.</summary>
    public IChatClient? ClientFor(string model)
    {
        if (ModelClients.Count == 0) return null;
        if (ModelClients.TryGetValue(model, out var exact)) return exact;
        IChatClient? best = null;
        var length = -1;
        foreach (var (pattern, client) in ModelClients)
        {
            if (pattern.EndsWith('*') && pattern.Length - 1 > length && model.StartsWith(pattern[..^1], StringComparison.OrdinalIgnoreCase))
            {
                best = client;
                length = pattern.Length - 1;
            }
        }
        return best;
    }

    /// <summary>The key used when none is set.</summary>
    public static VirtualKey InProcessKey { get; } = new()
    {
        Id = "in-process", Hash = "", Prefix = "in-process", Name = "Bursar.Extensions.AI", CreatedAt = DateTimeOffset.UnixEpoch,
        AllowedTagHeaders = AttributionResolver.AllTags, AllowedCustomers = [AttributionResolver.AnyCustomer],
    };
}
