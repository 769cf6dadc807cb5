using System.CommandLine;
using System.Globalization;
using Bursar.Core.Reporting;
using Spectre.Console;
using Bursar.Core.Budgets;
using Bursar.Core.Limits;

namespace Bursar.Cli.Commands;

internal static class BudgetsCommand
{
    public static Command Create()
    {
        var budgets = new Command("budgets", "Spending limits on any scope and period; a running gateway picks changes up within Bursar:PolicyRefreshInterval");

        var id = new Option<string?>("--id") { Description = "Budget id (default: <scope>-<value>-<period>)" };
        var scope = new Option<BudgetScope>("--scope") { Description = "global, key, team, customer, feature or model", Required = true };
        var value = new Option<string?>("--value") { Description = "Which key id, team, customer, feature or model (not for global)" };
        var period = new Option<BudgetPeriod>("--period") { Description = "hour, day, week, month or total", DefaultValueFactory = _ => BudgetPeriod.Month };
        var limit = new Option<decimal>("--limit") { Description = "Hard limit in USD", Required = true };
        var soft = new Option<decimal>("--soft") { Description = "Soft-limit alert at this share of the limit", DefaultValueFactory = _ => 0.8m };
        var tz = new Option<string>("--tz") { Description = "IANA time zone for calendar periods", DefaultValueFactory = _ => "UTC" };
        var set = new Command("set", "Create or change a budget") { id, scope, value, period, limit, soft, tz };
        set.SetAction(async (pr, ct) =>
        {
            var s = pr.GetValue(scope);
            var def = new BudgetDefinition
            {
                Id = pr.GetValue(id) ?? string.Join('-', new[] { s.ToString(), pr.GetValue(value), pr.GetValue(period).ToString() }.Where(x => x is not null)).ToLowerInvariant(),
                Scope = s,
                Value = s == BudgetScope.Global ? null : pr.GetValue(value),
                Period = pr.GetValue(period),
                LimitUsd = pr.GetValue(limit),
                SoftLimitFraction = pr.GetValue(soft),
                TimeZone = pr.GetValue(tz)!,
            };
            try
            {
                def.Validate();
            }
            catch (ArgumentException e)
            {
                Console.Error.WriteLine(e.Message);
                return 2;
            }
            await CliOptions.OpenStore(pr, create: true).UpsertBudgetAsync(def, ct);
            Console.WriteLine($"Budget '{TerminalText.Escape(def.Id)}': {TerminalText.Escape(def.Describe())}, limit ${def.LimitUsd}, alert at ${def.SoftLimitUsd}, time zone {def.TimeZone}.");
            return 0;
        });

        var list = new Command("list", "Budgets with the spend of their current period (from the ledger)");
        list.SetAction(async (pr, ct) =>
        {
            var store = CliOptions.OpenStore(pr);
            var now = TimeProvider.System.GetUtcNow();
            var all = await store.ListBudgetsAsync(ct);
            if (all.Count == 0)
            {
                Terminal.Line("No budgets. Add one: bursar budgets set --scope global|key|team|customer|feature|model [--value <v>] --limit <usd> [--period month]");
                return 0;
            }
            var table = Terminal.NewTable(Col.L("id"), Col.L("scope"), Col.L("period"), Col.R("limit USD"), Col.R("spent USD"), Col.R("used"), Col.L("resets (UTC)"), Col.L("state"));
            foreach (var b in all)
            {
                var (start, end) = BudgetWindow.Current(b.Period, b.TimeZone, now);
                var spent = await store.SpentSinceAsync(b, b.CountFrom(start), ct);
                var used = b.LimitUsd == 0 ? 0 : spent / b.LimitUsd;
                var state = spent >= b.LimitUsd ? "EXHAUSTED" : spent >= b.SoftLimitUsd ? "SOFT LIMIT" : "ok";
                table.AddRow(Terminal.Safe(b.Id), Terminal.Safe(b.Value is null ? "global" : $"{b.Scope.ToString().ToLowerInvariant()}={b.Value}"), b.Period.ToString().ToLowerInvariant(),
                    Terminal.Safe(Usd(b.LimitUsd)), Terminal.Safe(Usd(spent)), used.ToString("P1", CultureInfo.InvariantCulture),
                    end == DateTimeOffset.MaxValue ? "never" : end.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture), state);
            }
            Terminal.Write(table);
            return 0;
        });

        var which = new Argument<string>("id") { Description = "Budget id" };
        var reset = new Command("reset", "Start a budget's current period again from zero") { which };
        reset.SetAction(async (pr, ct) =>
        {
            var ok = await CliOptions.OpenStore(pr).ResetBudgetAsync(pr.GetValue(which)!, TimeProvider.System.GetUtcNow(), ct);
            Console.WriteLine(ok ? $"Budget '{TerminalText.Escape(pr.GetValue(which))}' reset." : $"No budget '{TerminalText.Escape(pr.GetValue(which))}'.");
            return ok ? 0 : 1;
        });
        var which2 = new Argument<string>("id") { Description = "Budget id" };
        var delete = new Command("delete", "Remove a budget") { which2 };
        delete.SetAction(async (pr, ct) =>
        {
            var ok = await CliOptions.OpenStore(pr).DeleteBudgetAsync(pr.GetValue(which2)!, ct);
            Console.WriteLine(ok ? $"Budget '{TerminalText.Escape(pr.GetValue(which2))}' deleted." : $"No budget '{TerminalText.Escape(pr.GetValue(which2))}'.");
            return ok ? 0 : 1;
        });
        budgets.Subcommands.Add(set);
        budgets.Subcommands.Add(list);
        budgets.Subcommands.Add(reset);
        budgets.Subcommands.Add(delete);
        return budgets;
    }

    public static Command CreateLimits()
    {
        var limits = new Command("limits", "Requests and tokens per minute for a key, team or customer");
        var scope = new Option<RateLimitScope>("--scope") { Description = "key, team or customer", Required = true };
        var value = new Option<string>("--value") { Description = "The key id, team or customer", Required = true };
        var rpm = new Option<int?>("--rpm") { Description = "Requests per minute" };
        var tpm = new Option<long?>("--tpm") { Description = "Tokens per minute (estimated input + output limit)" };
        var set = new Command("set", "Create or change a rate limit") { scope, value, rpm, tpm };
        set.SetAction(async (pr, ct) =>
        {
            var def = new RateLimitDefinition(pr.GetValue(scope), pr.GetValue(value)!, pr.GetValue(rpm), pr.GetValue(tpm));
            if (def.RequestsPerMinute is 0 || def.TokensPerMinute is 0)
            {
                Console.Error.WriteLine($"A limit of 0 would refuse every call of {def.Scope.ToString().ToLowerInvariant()} '{TerminalText.Escape(def.Value)}'. To remove the limit: bursar limits delete --scope {def.Scope.ToString().ToLowerInvariant()} --value {TerminalText.Escape(def.Value)}; to stop a key: bursar keys revoke <id>.");
                return 2;
            }
            if (def.RequestsPerMinute is null && def.TokensPerMinute is null)
            {
                Console.Error.WriteLine("Give --rpm, --tpm or both.");
                return 2;
            }
            try { def.Validate(); }
            catch (ArgumentException e) { Console.Error.WriteLine(e.Message); return 2; }
            await CliOptions.OpenStore(pr, create: true).UpsertRateLimitAsync(def, ct);
            Console.WriteLine($"Rate limit for {def.Scope.ToString().ToLowerInvariant()} '{TerminalText.Escape(def.Value)}': {def.RequestsPerMinute?.ToString(CultureInfo.InvariantCulture) ?? "-"} requests/min, {def.TokensPerMinute?.ToString(CultureInfo.InvariantCulture) ?? "-"} tokens/min.");
            return 0;
        });
        var list = new Command("list", "List rate limits");
        list.SetAction(async (pr, ct) =>
        {
            var all = await CliOptions.OpenStore(pr).ListRateLimitsAsync(ct);
            if (all.Count == 0)
            {
                Terminal.Line("No rate limits. Add one: bursar limits set --scope key|team|customer --value <v> --rpm <n> [--tpm <n>]");
                return 0;
            }
            var table = Terminal.NewTable(Col.L("scope"), Col.L("value"), Col.R("requests/min"), Col.R("tokens/min"));
            foreach (var l in all)
                table.AddRow(l.Scope.ToString().ToLowerInvariant(), Terminal.Safe(l.Value),
                    l.RequestsPerMinute?.ToString("N0", CultureInfo.InvariantCulture) ?? "-", l.TokensPerMinute?.ToString("N0", CultureInfo.InvariantCulture) ?? "-");
            Terminal.Write(table);
            return 0;
        });
        var dscope = new Option<RateLimitScope>("--scope") { Description = "key, team or customer", Required = true };
        var dvalue = new Option<string>("--value") { Description = "The key id, team or customer", Required = true };
        var delete = new Command("delete", "Remove a rate limit") { dscope, dvalue };
        delete.SetAction(async (pr, ct) =>
        {
            var (sc, v) = (pr.GetValue(dscope), pr.GetValue(dvalue)!);
            if (await CliOptions.OpenStore(pr).DeleteRateLimitAsync(sc, v, ct))
            {
                Console.WriteLine($"Removed the rate limit of {sc.ToString().ToLowerInvariant()} '{TerminalText.Escape(v)}'.");
                return 0;
            }
            Console.Error.WriteLine($"No rate limit for {sc.ToString().ToLowerInvariant()} '{TerminalText.Escape(v)}' (bursar limits list shows them).");
            return 2;
        });
        limits.Subcommands.Add(set);
        limits.Subcommands.Add(list);
        limits.Subcommands.Add(delete);
        return limits;
    }

    private static string Usd(decimal d) => "$" + d.ToString("#,0.00####", CultureInfo.InvariantCulture);
}
