namespace Bursar.Core.Keys;

/// <summary>Creates a virtual key and its one-time secret; used by the CLI and the admin API alike.</summary>
public static class KeyFactory
{
    /// <summary>
    /// Checks an allowed-customers list against the key's fixed customer; null when it is fine, else what to fix
    /// (<paramref name="option"/> is how the caller spells the list: <c>--customers</c>, <c>allowed_customers</c>).
    /// </summary>
    public static string? CheckAllowedCustomers(IReadOnlyList<string>? customers, string? fixedCustomer, string option)
    {
        if (customers is not { Count: > 0 }) return null;
        if (fixedCustomer is not null) return $"{option} cannot be combined with a fixed customer ('{fixedCustomer}'): a key that fixes its customer names no other.";
        foreach (var c in customers)
        {
            if (string.IsNullOrWhiteSpace(c)) return $"{option} has an empty customer name.";
            if (c.Length > Attribution.AttributionResolver.MaxTagLength) return $"{option}: customer '{c[..20]}…' is longer than {Attribution.AttributionResolver.MaxTagLength} characters.";
            if (c.Any(char.IsControl)) return $"{option}: customer names may not contain control characters.";
        }
        return null;
    }

    public static (VirtualKey Key, string Secret) Create(TimeProvider time, string? name = null, string? team = null, string? customer = null, string? feature = null,
        IReadOnlyList<string>? allowedTags = null, string? downgradeModel = null, string? unpricedPolicy = null, IReadOnlyList<string>? allowedCustomers = null)
    {
        var secret = VirtualKey.NewSecret();
        var key = new VirtualKey
        {
            Id = "key_" + Guid.NewGuid().ToString("N")[..12],
            Hash = VirtualKey.HashSecret(secret),
            Prefix = VirtualKey.DisplayPrefix(secret),
            Name = name,
            Team = team,
            Customer = customer,
            Feature = feature,
            AllowedTagHeaders = allowedTags is { Count: > 0 } ? allowedTags : null,
            AllowedCustomers = allowedCustomers is { Count: > 0 } ? allowedCustomers : null,
            DowngradeModel = downgradeModel,
            UnpricedPolicy = unpricedPolicy ?? "allow",
            CreatedAt = time.GetUtcNow(),
        };
        return (key, secret);
    }
}
