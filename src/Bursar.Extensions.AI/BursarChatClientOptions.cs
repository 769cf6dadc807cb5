using Bursar.Core.Attribution;
using Bursar.Core.Keys;

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

    public BursarChatClientOptions Clone() => (BursarChatClientOptions)MemberwiseClone();

    /// <summary>The key used when none is set.</summary>
    public static VirtualKey InProcessKey { get; } = new()
    {
        Id = "in-process", Hash = "", Prefix = "in-process", Name = "Bursar.Extensions.AI", CreatedAt = DateTimeOffset.UnixEpoch,
        AllowedTagHeaders = AttributionResolver.AllTags, AllowedCustomers = [AttributionResolver.AnyCustomer],
    };
}
