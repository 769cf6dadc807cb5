using System.CommandLine;
using System.Text.Json;
using Bursar.Core.Reporting;
using Spectre.Console;
using Bursar.Core.Routing;

namespace Bursar.Cli.Commands;

internal static class RoutesCommand
{
    public static Command Create()
    {
        var routes = new Command("routes", "Route policies kept in the store (in front of those in configuration); a running gateway picks changes up within Bursar:PolicyRefreshInterval");
        var list = new Command("list", "The stored routes, in the order they are tried");
        list.SetAction(async (pr, ct) =>
        {
            var stored = await CliOptions.OpenStore(pr).ListRoutesAsync(ct);
            if (stored.Count == 0)
            {
                Terminal.Line("No stored routes (configured ones live in Bursar:Routing:Routes).");
                return 0;
            }
            var table = Terminal.NewTable(Col.R("priority"), Col.L("name"), Col.L("policy (JSON)"));
            foreach (var r in stored) table.AddRow(r.Priority.ToString(System.Globalization.CultureInfo.InvariantCulture), Terminal.Safe(r.Name), Terminal.Safe(r.ToJson()));
            Terminal.Write(table);
            return 0;
        });
        var name = new Argument<string>("name") { Description = "The route's name (recorded on the ledger rows it touches)" };
        var policy = new Option<string>("--policy") { Description = "The route as JSON (snake_case, or PascalCase as in appsettings.json; an unknown field is an error), e.g. '{\"task\":\"classification\",\"model\":\"gpt-4.1-nano\",\"max_tokens\":50}'", Required = true };
        var priority = new Option<int>("--priority") { Description = "Lower is tried first among stored routes", DefaultValueFactory = _ => 0 };
        var set = new Command("set", "Create or replace a stored route") { name, policy, priority };
        set.SetAction(async (pr, ct) =>
        {
            RoutePolicy p;
            try
            {
                p = StoredRoute.Parse(pr.GetValue(policy)!);
                p.Name = pr.GetValue(name)!;
                p.Validate("--policy"); // models are checked against the deployments by the gateway when it loads the route
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException)
            {
                await Console.Error.WriteLineAsync($"routes set {TerminalText.Escape(pr.GetValue(name))}: {TerminalText.Escape(e.Message)}");
                return 2;
            }
            await CliOptions.OpenStore(pr, create: true).UpsertRouteAsync(new StoredRoute(p.Name, pr.GetValue(priority), p), ct);
            Console.WriteLine($"route {TerminalText.Escape(p.Name)} stored (priority {pr.GetValue(priority)})");
            return 0;
        });
        var delete = new Command("delete", "Delete a stored route") { name };
        delete.SetAction(async (pr, ct) =>
        {
            if (await CliOptions.OpenStore(pr).DeleteRouteAsync(pr.GetValue(name)!, ct)) return 0;
            await Console.Error.WriteLineAsync($"routes delete: no stored route is named '{TerminalText.Escape(pr.GetValue(name))}'");
            return 1;
        });
        routes.Subcommands.Add(list);
        routes.Subcommands.Add(set);
        routes.Subcommands.Add(delete);
        return routes;
    }
}
