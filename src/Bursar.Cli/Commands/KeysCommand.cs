using System.CommandLine;
using Bursar.Core.Attribution;
using Bursar.Core.Keys;

namespace Bursar.Cli.Commands;

internal static class KeysCommand
{
    public static Command Create()
    {
        var keys = new Command("keys", "Create, list and revoke Bursar virtual keys (what callers authenticate with; provider keys stay in the gateway)");

        var team = new Option<string?>("--team") { Description = "Team the key's calls are attributed to (callers cannot override it)" };
        var customer = new Option<string?>("--customer") { Description = "Customer the key's calls are attributed to (callers cannot override it)" };
        var feature = new Option<string?>("--feature") { Description = "Feature the key's calls are attributed to" };
        var name = new Option<string?>("--name") { Description = "A label for the key" };
        var allow = new Option<string[]>("--allow-tags") { Description = $"Attribution headers callers may set: {string.Join(", ", AttributionResolver.AllTags)} (default: all the key does not fix)", AllowMultipleArgumentsPerToken = true };
        var create = new Command("create", "Create a key and print its secret once") { team, customer, feature, name, allow };
        create.SetAction(async (pr, ct) =>
        {
            var store = CliOptions.OpenStore(pr);
            var secret = VirtualKey.NewSecret();
            var tags = pr.GetValue(allow);
            if (tags is { Length: > 0 } && tags.FirstOrDefault(t => !AttributionResolver.AllTags.Contains(t)) is { } bad)
            {
                Console.Error.WriteLine($"Unknown tag '{bad}' in --allow-tags; choose from {string.Join(", ", AttributionResolver.AllTags)}.");
                return 2;
            }
            var key = new VirtualKey
            {
                Id = "key_" + Guid.NewGuid().ToString("N")[..12],
                Hash = VirtualKey.HashSecret(secret),
                Prefix = VirtualKey.DisplayPrefix(secret),
                Name = pr.GetValue(name),
                Team = pr.GetValue(team),
                Customer = pr.GetValue(customer),
                Feature = pr.GetValue(feature),
                AllowedTagHeaders = tags is { Length: > 0 } ? tags : null,
                CreatedAt = TimeProvider.System.GetUtcNow(),
            };
            await store.AddAsync(key, ct);
            Console.WriteLine(secret);
            Console.Error.WriteLine($"Created {key.Id} (team={key.Team ?? "-"}, customer={key.Customer ?? "-"}). The secret above is shown only once.");
            return 0;
        });

        var list = new Command("list", "List keys (secrets are never shown)");
        list.SetAction(async (pr, ct) =>
        {
            var all = await CliOptions.OpenStore(pr).ListAsync(ct);
            Console.WriteLine($"{"id",-18} {"prefix",-14} {"team",-14} {"customer",-14} {"feature",-14} {"created",-20} status");
            foreach (var k in all)
                Console.WriteLine($"{k.Id,-18} {k.Prefix + "…",-14} {k.Team ?? "-",-14} {k.Customer ?? "-",-14} {k.Feature ?? "-",-14} {k.CreatedAt:yyyy-MM-dd HH:mm:ss}  {(k.IsRevoked ? $"revoked {k.RevokedAt:yyyy-MM-dd HH:mm}" : "active")}");
            return 0;
        });

        var which = new Argument<string>("key") { Description = "Key id (key_…) or its displayed prefix (bsr_…)" };
        var revoke = new Command("revoke", "Revoke a key; the gateway refuses it within Bursar:KeyCacheDuration") { which };
        revoke.SetAction(async (pr, ct) =>
        {
            var ok = await CliOptions.OpenStore(pr).RevokeAsync(pr.GetValue(which)!, TimeProvider.System.GetUtcNow(), ct);
            Console.WriteLine(ok ? $"Revoked {pr.GetValue(which)}." : $"No active key matches '{pr.GetValue(which)}'.");
            return ok ? 0 : 1;
        });
        keys.Subcommands.Add(create);
        keys.Subcommands.Add(list);
        keys.Subcommands.Add(revoke);
        return keys;
    }
}
