using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Segmentation.Training;

/// <summary>
/// The AdamW step of every parameter of a group in one call, as PyTorch's <c>AdamW(fused=True)</c>: libtorch's
/// <c>_fused_adamw_</c> kernel (CPU and CUDA), reached through a TorchScript function (TorchSharp has no binding for
/// it). Gradient clipping (<c>_foreach_norm</c>) and float16's unscaling and overflow check
/// (<c>_amp_foreach_non_finite_check_and_unscale_</c>, <c>_amp_update_scale_</c>, <see cref="DeviceLossScaler"/>)
/// stay on the device too, so a step reads nothing back. The moments live in TorchSharp's own <c>AdamW</c> state, so
/// checkpoints are the same files whichever step wrote them; the step counts are kept as tensors (the kernel's form)
/// and written back before a save (<see cref="SyncSteps"/>).
/// </summary>
internal sealed class FusedAdamW : IDisposable
{
    private const string Source = @"
def adamw(params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
          steps: List[Tensor], lr: float, beta1: float, beta2: float, weight_decay: float, eps: float) -> int:
    torch._foreach_add_(steps, 1)
    none: List[Tensor] = []
    torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, none, steps, lr=lr, beta1=beta1, beta2=beta2,
                        weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False)
    return 0

def adamw_unless_inf(params: List[Tensor], grads: List[Tensor], exp_avgs: List[Tensor], exp_avg_sqs: List[Tensor],
                     steps: List[Tensor], lr: float, beta1: float, beta2: float, weight_decay: float, eps: float,
                     found_inf: Tensor) -> int:
    torch._foreach_add_(steps, 1)
    none: List[Tensor] = []
    torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, none, steps, lr=lr, beta1=beta1, beta2=beta2,
                        weight_decay=weight_decay, eps=eps, amsgrad=False, maximize=False, found_inf=found_inf)
    skipped = found_inf.view([])
    torch._foreach_sub_(steps, [skipped for _ in range(len(steps))])
    return 0

def clip(grads: List[Tensor], max_norm: float) -> int:
    norms = torch._foreach_norm(grads, 2.0)
    total = torch.stack(norms).pow(2).sum().sqrt()
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coefficient)
    return 0

def unscale(grads: List[Tensor], found_inf: Tensor, inv_scale: Tensor) -> int:
    found_inf.zero_()
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
    return 0

def update_scale(scale: Tensor, growth_tracker: Tensor, found_inf: Tensor, growth: float, backoff: float,
                 interval: int, skipped: Tensor, in_a_row: Tensor) -> int:
    torch._amp_update_scale_(scale, growth_tracker, found_inf, growth, backoff, interval)
    skipped.add_(found_inf)
    in_a_row.mul_(found_inf).add_(found_inf)
    return 0
";

    private static readonly Lazy<(jit.CompilationUnit? Unit, string? Error)> Compiled = new(() =>
    {
        try { return (jit.compile(Source), null); }
        catch (Exception e) { return (null, e.Message.Split('\n')[0]); }
    });

    private readonly AdamW optimizer;
    private readonly Dictionary<nint, Tensor> steps = new();

    /// <summary>Why the fused step cannot run with this libtorch (null: it can).</summary>
    public static string? Unavailable => Compiled.Value.Error;

    public FusedAdamW(AdamW optimizer) => this.optimizer = optimizer;

    /// <summary>
    /// Clips (when <paramref name="clipNorm"/> is given) and steps every parameter with a gradient; with
    /// <paramref name="scaler"/>, the gradients are unscaled first and a step whose gradients overflowed leaves
    /// weights and moments as they were.
    /// </summary>
    public void Step(double? clipNorm, DeviceLossScaler? scaler)
    {
        var unit = Compiled.Value.Unit ?? throw new InvalidOperationException(Unavailable);
        using var scope = NewDisposeScope();
        var groups = Groups();
        var allGrads = groups.SelectMany(g => g.Grads).ToArray();
        if (allGrads.Length == 0) return;
        if (scaler is not null)
            TorchScriptCall.Invoke(unit, "unscale", allGrads, scaler.FoundInf, scaler.InverseScale());
        if (clipNorm is { } clip) TorchScriptCall.Invoke(unit, "clip", allGrads, clip.ToScalar());
        foreach (var g in groups)
        {
            if (g.Params.Length == 0) continue;
            var common = new object[] { g.Params, g.Grads, g.ExpAvgs, g.ExpAvgSqs, g.Steps, g.Lr.ToScalar(),
                g.Beta1.ToScalar(), g.Beta2.ToScalar(), g.WeightDecay.ToScalar(), g.Eps.ToScalar() };
            if (scaler is null) TorchScriptCall.Invoke(unit, "adamw", common);
            else TorchScriptCall.Invoke(unit, "adamw_unless_inf", common.Append(scaler.FoundInf).ToArray());
        }
        scaler?.Update(unit);
    }

    private sealed record Group(Tensor[] Params, Tensor[] Grads, Tensor[] ExpAvgs, Tensor[] ExpAvgSqs, Tensor[] Steps,
        double Lr, double Beta1, double Beta2, double WeightDecay, double Eps);

    /// <summary>Each parameter group's parameters that have a gradient, with their state.</summary>
    private List<Group> Groups()
    {
        var states = optimizer.state_dict().State;
        var result = new List<Group>();
        int index = 0;
        foreach (var g in optimizer.ParamGroups.Cast<ParamGroup>())
        {
            var o = (AdamW.Options)g.Options;
            var (ps, gs, ms, vs, ss) = (new List<Tensor>(), new List<Tensor>(), new List<Tensor>(),
                new List<Tensor>(), new List<Tensor>());
            foreach (var p in g.Parameters)
            {
                var state = (AdamW.State)states[index++];
                if (p.grad is not { } grad) continue;
                ps.Add(p); gs.Add(grad); ms.Add(state.exp_avg); vs.Add(state.exp_avg_sq);
                ss.Add(StepOf(p, state));
            }
            result.Add(new Group(ps.ToArray(), gs.ToArray(), ms.ToArray(), vs.ToArray(), ss.ToArray(),
                g.LearningRate, o.beta1!.Value, o.beta2!.Value, o.weight_decay!.Value, o.eps!.Value));
        }
        return result;
    }

    private Tensor StepOf(Parameter p, AdamW.State state)
    {
        if (!steps.TryGetValue(p.Handle, out var step))
            steps[p.Handle] = step = tensor((float)state.step, ScalarType.Float32, p.device).DetachFromDisposeScope();
        return step;
    }

    /// <summary>Writes the step counts into TorchSharp's state (one read-back each; before a checkpoint).</summary>
    public void SyncSteps()
    {
        var states = optimizer.state_dict().State;
        int index = 0;
        foreach (var g in optimizer.ParamGroups.Cast<ParamGroup>())
            foreach (var p in g.Parameters)
            {
                var state = (AdamW.State)states[index++];
                if (steps.TryGetValue(p.Handle, out var step)) state.step = (long)step.item<float>();
            }
    }

    /// <summary>Forgets the step counts (after TorchSharp's state was loaded from a checkpoint).</summary>
    public void Reset()
    {
        foreach (var s in steps.Values) s.Dispose();
        steps.Clear();
    }

    public void Dispose() => Reset();
}

/// <summary>
/// float16's dynamic loss scaling kept on the device, as PyTorch's <c>GradScaler</c> keeps it: the scale, the count
/// of good steps and the overflow flag are tensors that the fused step reads and updates, so no step waits for a
/// read-back. <see cref="ReadInto"/> copies them into the host-side <see cref="LossScaler"/> (for checkpoints,
/// messages and the divergence check) when asked.
/// </summary>
internal sealed class DeviceLossScaler : IDisposable
{
    private readonly LossScaler host;
    private readonly Tensor scale, growthTracker, skipped, inARow;

    public DeviceLossScaler(LossScaler host, Device device)
    {
        this.host = host;
        scale = full(1, host.Scale, ScalarType.Float32, device);
        growthTracker = full(1, host.GoodSteps, ScalarType.Int32, device);
        FoundInf = zeros(1, ScalarType.Float32, device);
        skipped = full(1, (double)host.SkippedSteps, ScalarType.Float32, device);
        inARow = full(1, host.ConsecutiveSkips, ScalarType.Float32, device);
    }

    /// <summary>The host-side scaler this one copies into.</summary>
    public LossScaler Host => host;

    /// <summary>1 when the latest step's gradients held an infinity or NaN (that step was skipped).</summary>
    public Tensor FoundInf { get; }

    /// <summary>The loss times the scale (backward on this).</summary>
    public Tensor ScaleLoss(Tensor loss) => loss * scale;

    public Tensor InverseScale() => scale.reciprocal();

    public void Update(jit.CompilationUnit unit) => TorchScriptCall.Invoke(unit, "update_scale", scale, growthTracker,
        FoundInf,
        host.GrowthFactor.ToScalar(), host.BackoffFactor.ToScalar(), host.GrowthInterval, skipped, inARow);

    /// <summary>Copies scale, good steps, skipped steps and skips in a row into the host scaler (read-backs).</summary>
    public void ReadInto() => host.Set(scale.item<float>(), growthTracker.item<int>(), (long)skipped.item<float>(),
        (int)inARow.item<float>());

    /// <summary>Takes the host scaler's values (after a resume restored them).</summary>
    public void Load()
    {
        using var noGrad = no_grad();
        scale.fill_(host.Scale); growthTracker.fill_(host.GoodSteps);
        skipped.fill_((double)host.SkippedSteps); inARow.fill_(host.ConsecutiveSkips);
    }

    public void Dispose()
    {
        foreach (var t in new[] { scale, growthTracker, FoundInf, skipped, inARow }) t.Dispose();
    }
}
