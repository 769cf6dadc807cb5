using System.CommandLine;
using Bursar.Core.Reporting;
using Spectre.Console;
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
        var customers = new Option<string[]>("--customers") { Description = "Customers callers may name with x-bursar-customer (comma- or space-separated; * = any). Default none: a key without --customer may not name one", AllowMultipleArgumentsPerToken = true };
        var downgrade = new Option<string?>("--downgrade-model") { Description = "When a budget would refuse a call, serve it with this cheaper model instead" };
        var unpriced = new Option<string>("--unpriced") { Description = "Models without a price while budgets apply: allow (flagged) or refuse", DefaultValueFactory = _ => "allow" };
        var rpm = new Option<int?>("--rpm") { Description = "Requests per minute for this key" };
        var tpm = new Option<long?>("--tpm") { Description = "Tokens per minute for this key" };
        var create = new Command("create", "Create a key and print its secret once") { team, customer, feature, name, allow, customers, downgrade, unpriced, rpm, tpm };
        create.SetAction(async (pr, ct) =>
        {
            var store = CliOptions.OpenStore(pr, create: true);
            var tags = pr.GetValue(allow);
            if (pr.GetValue(unpriced) is not ("allow" or "refuse"))
            {
                Console.Error.WriteLine("--unpriced must be 'allow' or 'refuse'.");
                return 2;
            }
            if (tags is { Length: > 0 } && tags.FirstOrDefault(t => !AttributionResolver.AllTags.Contains(t)) is { } bad)
            {
                Console.Error.WriteLine($"Unknown tag '{bad}' in --allow-tags; choose from {string.Join(", ", AttributionResolver.AllTags)}.");
                return 2;
            }
            var allowedCustomers = (pr.GetValue(customers) ?? []).SelectMany(c => c.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)).Distinct(StringComparer.Ordinal).ToArray();
            if (KeyFactory.CheckAllowedCustomers(allowedCustomers, pr.GetValue(customer), "--customers") is { } customersProblem)
            {
                Console.Error.WriteLine(customersProblem);
                return 2;
            }
            var (key, secret) = KeyFactory.Create(TimeProvider.System, pr.GetValue(name), pr.GetValue(team), pr.GetValue(customer), pr.GetValue(feature), tags, pr.GetValue(downgrade), pr.GetValue(unpriced), allowedCustomers);
            Bursar.Core.Limits.RateLimitDefinition? limit = pr.GetValue(rpm) is not null || pr.GetValue(tpm) is not null
                ? new(Bursar.Core.Limits.RateLimitScope.Key, key.Id, pr.GetValue(rpm), pr.GetValue(tpm)) : null;
            try { limit?.Validate(); }
            catch (ArgumentException e) { Console.Error.WriteLine(e.Message); return 2; }
            await store.AddAsync(key, ct);
            if (limit is not null) await store.UpsertRateLimitAsync(limit, ct);
            Console.WriteLine(secret);
            Console.Error.WriteLine($"Created {key.Id} (team={TerminalText.Escape(key.Team ?? "-")}, customer={TerminalText.Escape(key.Customer ?? (key.AllowedCustomers is { } ac ? "may name " + string.Join(",", ac) : "-"))}). The secret above is shown only once.");
            return 0;
        });

        var list = new Command("list", "List keys (secrets are never shown)");
        list.SetAction(async (pr, ct) =>
        {
            var all = await CliOptions.OpenStore(pr).ListAsync(ct);
            if (all.Count == 0)
            {
                Terminal.Line("No keys. Create one: bursar keys create --team <team>");
                return 0;
            }
            var table = Terminal.NewTable(Col.L("id"), Col.L("prefix"), Col.L("name"), Col.L("team"), Col.L("customer"), Col.L("feature"), Col.L("created (UTC)"), Col.L("status"));
            foreach (var k in all)
                table.AddRow(Terminal.Safe(k.Id), Terminal.Safe(k.Prefix + "…"), Terminal.Safe(k.Name ?? "-"), Terminal.Safe(k.Team ?? "-"),
                    Terminal.Safe(k.Customer ?? (k.AllowedCustomers is { Count: > 0 } ac ? "may name " + string.Join(",", ac) : "-")), Terminal.Safe(k.Feature ?? "-"),
                    k.CreatedAt.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture),
                    k.IsRevoked ? $"revoked {k.RevokedAt!.Value.UtcDateTime.ToString("yyyy-MM-dd HH:mm", System.Globalization.CultureInfo.InvariantCulture)}" : "active");
            Terminal.Write(table);
            return 0;
        });

        var which = new Argument<string>("key") { Description = "Key id (key_…) or its displayed prefix (bsr_…)" };
        var revoke = new Command("revoke", "Revoke a key; a running gateway refuses it within Bursar:KeyCacheDuration (revoke through the admin API for immediate effect)") { which };
        revoke.SetAction(async (pr, ct) =>
        {
            var ok = await CliOptions.OpenStore(pr).RevokeAsync(pr.GetValue(which)!, TimeProvider.System.GetUtcNow(), ct);
            Console.WriteLine(ok ? $"Revoked {TerminalText.Escape(pr.GetValue(which))}." : $"No active key matches '{TerminalText.Escape(pr.GetValue(which))}'.");
            return ok ? 0 : 1;
        });
        keys.Subcommands.Add(create);
        keys.Subcommands.Add(list);
        keys.Subcommands.Add(revoke);
        return keys;
    }
}
