namespace Bursar.Core.Keys;

/// <summary>Creates a virtual key and its one-time secret; used by the CLI and the admin API alike.</summary>
public static class KeyFactory
{
    public static (VirtualKey Key, string Secret) Create(TimeProvider time, string? name = null, string? team = null, string? customer = null, string? feature = null,
        IReadOnlyList<string>? allowedTags = null, string? downgradeModel = null, string? unpricedPolicy = null)
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
            DowngradeModel = downgradeModel,
            UnpricedPolicy = unpricedPolicy ?? "allow",
            CreatedAt = time.GetUtcNow(),
        };
        return (key, secret);
    }
}
