(* ::Package:: *)

(* RKJupyter.wl -- what rk_jupyter's Wolfram engine evaluates notebook cells with.

   The engine sends EvaluatePacket[RKJupyter`Evaluate["cell text"]] (EvaluatePacket bypasses
   the kernel's main loop, which would format results for a terminal), so this package does the
   front end's bookkeeping itself and returns the result as data the engine turns into Jupyter
   MIME bundles.  Print and messages are not touched: they reach the engine as the kernel's own
   TextPacket/MessagePacket while the cell runs.

   Cells follow rk_jupyter's convention (the same as its Mathics3 engine): a cell is one input
   line n; its top-level expressions (a new line ends an expression that is complete, as in a
   notebook) are evaluated in order; In[n] is the cell, Out[n] its last expression's value; a
   syntax error anywhere evaluates nothing.  Each expression is parsed just before it runs, as
   a notebook does: parsing creates symbols in $Context, so a cell whose first line loads a
   package (Needs, Get, BeginPackage, a $ContextPath change) must not have its next line
   parsed before then, or that line's names would shadow the package's (::shdw).

   EvaluatePacket bypasses the kernel's main loop, so this package also does what the main
   loop does between inputs: $MessageList starts empty for each cell (otherwise General::stop
   silences a message for the rest of the session) and MessageList[n] keeps it; an uncaught
   Throw gives Throw::nocatch and Hold[Throw[...]] as at top level.

   Names are written in full (RKJupyter`Evaluate, not Evaluate) and the context is not put on
   $ContextPath, so that nothing here shadows System`Evaluate or a user's symbols.

   Dynamic output, as a notebook shows it (the same as rk_jupyter's Mathics3 engine; the
   protocol is in rk_jupyter/link/packets.py):
   - a Manipulate that is a cell's result becomes live controls: its result bundle carries the
     controls' specification under the MIME type $manipulateMime (as data: the engine writes it
     as JSON) and the view at the initial values; its held expression is kept under an id, and
     RKJupyter`ManipulateView[id, values] (the front end's EvaluatePacket on each change) gives
     the view at other values.  A Manipulate anywhere else is left alone.
   - PrintTemporary and Monitor, which a kernel without a front end only prints or ignores,
     send temporary displays: DisplayPacket[{"RKDisplay", id, bundle}] written on $ParentLink
     during the evaluation (Null as the bundle removes it), which the engine turns into the
     link's RKDisplay.  A Monitor's display is refreshed by a scheduled task at most 4 times a
     second and removed when the Monitor ends, however it ends.  They are replaced only while a
     cell or a view evaluates (Block), so that nothing of the kernel's own is redefined.
   - ProgressIndicator, a result or a temporary display, is a progress bar (HTML and text). *)

RKJupyter`Evaluate::usage = "RKJupyter`Evaluate[code] evaluates the text of a cell like a " <>
    "notebook front end and returns <|\"line\" -> next line number, \"results\" -> " <>
    "{bundle...}|>, a bundle being <|\"line\" -> n, \"text/plain\" -> ..., ...|> (none when " <>
    "the value is Null), plus \"syntax\" -> position of the error (1-based) when the cell " <>
    "does not parse.";
RKJupyter`Complete::usage = "RKJupyter`Complete[prefix] gives the names of symbols that " <>
    "start with prefix.";
RKJupyter`Inspect::usage = "RKJupyter`Inspect[name] gives <|\"text/plain\" -> usage|> for " <>
    "the symbol name, or Null when it has no usage message.";
RKJupyter`Info::usage = "RKJupyter`Info[] describes the kernel.";
RKJupyter`EvaluateExpression::usage = "RKJupyter`EvaluateExpression[code] evaluates text " <>
    "for its value, like ToExpression (no In/Out, $Line, $Pre or $Post): <|\"value\" -> " <>
    "value|>, or <|\"syntax\" -> position|> when it does not parse (nothing is evaluated).";
RKJupyter`ManipulateView::usage = "RKJupyter`ManipulateView[id, {v1, ...}] gives the MIME " <>
    "bundle (an Association of strings) of a Manipulate's expression with its controls at " <>
    "the values v1, ... (numbers, True/False, 1-based indices of choices).";

Begin["RKJupyter`Private`"];

$pageWidth = 100;
$maxText = 100000;   (* characters of text/plain before Short; the engine sets output_limit *)
$maxTeX = 20000;
$maxTeXLeaves = 5000;
$renderSeconds = 60;
$frontEnd = Automatic;  (* not probed yet; then True, or why no front end draws here *)
$manipulateMime = "application/vnd.rk-jupyter.manipulate+json";  (* packets.MANIPULATE_MIME *)
$keep = 200;          (* Manipulates kept; the oldest are forgotten (their controls say so) *)
$refresh = 0.25;      (* seconds between a Monitor's refreshes, at least *)
$bar = 20;            (* characters of a ProgressIndicator's bar of text *)

(* Print and message text as results are shown: on one line however long, and in Unicode (a
   kernel under LANG=C would otherwise print \[Alpha]). *)
If[ListQ[$Output] && ListQ[$Messages],
    Quiet[SetOptions[#, PageWidth -> Infinity, CharacterEncoding -> "Unicode"] & /@
        Join[$Output, $Messages]]];

(* What a front end would draw rather than print. *)
$pictures = _Graphics | _Graphics3D | _Image | _Image3D | _Graph | _Legended | _GeoGraphics |
    _Sound | _Audio | _Dataset | _Manipulate | _Dynamic | _DynamicModule;
(* Results whose text is the point: TeX would typeset the form, not the expression. *)
$textForms = _FullForm | _InputForm | _OutputForm | _TeXForm | _MathMLForm | _TreeForm;

RKJupyter`Evaluate[code_String] := Module[{line, chunks},
    If[!IntegerQ[$Line], $Line = 1];
    line = $Line;
    Unprotect[$MessageList]; $MessageList = {}; Protect[$MessageList];
    chunks = statements[code];
    Which[
        chunks === {}, <|"line" -> line, "results" -> {}|>,
        !SyntaxQ[Last[chunks][[2]]], syntaxError[line, Last[chunks]],
        True, run[line, chunks[[All, 2]]]
    ]
];

(* The cell's top-level expressions as {offset, text}: lines are joined until they parse (the
   last element does not parse when the cell has a syntax error); blank parts are dropped. *)
statements[code_String] := Module[{newlines, starts, ends, chunks = {}, acc = Null, start = 0},
    newlines = StringPosition[code, "\n"][[All, 1]];
    starts = Prepend[newlines + 1, 1];
    ends = Append[newlines - 1, StringLength[code]];
    Do[
        If[acc === Null,
            acc = StringTake[code, {starts[[i]], ends[[i]]}]; start = starts[[i]] - 1,
            acc = acc <> "\n" <> StringTake[code, {starts[[i]], ends[[i]]}]
        ];
        Which[
            StringTrim[acc] === "", acc = Null,
            SyntaxQ[acc], AppendTo[chunks, {start, acc}]; acc = Null
        ],
        {i, Length[starts]}
    ];
    If[acc =!= Null, AppendTo[chunks, {start, acc}]];
    chunks
];

(* The kernel's own syntax message, and where the error is. *)
syntaxError[line_, chunk_] :=
    <|"line" -> line, "results" -> {}, "syntax" -> syntaxPosition[chunk]|>;

syntaxPosition[{offset_, text_}] := Module[{length = SyntaxLength[text]},
    ToExpression[text, InputForm, HoldComplete];
    If[!IntegerQ[length], length = StringLength[text]];
    offset + Min[length, StringLength[text]] + 1
];

run[line_, texts_List] := Module[{value},
    value = CheckAbort[
        uncaught[Catch[Catch[evaluated[withDynamic[evaluateEach[line, texts]]]], _, thrown]],
        setOut[line, $Aborted]; endLine[line]; Abort[]
    ];
    If[ValueQ[$Post], value = $Post[value]];
    setOut[line, value];
    endLine[line];
    <|"line" -> line + 1,
      "results" -> If[value === Null, {}, {Join[<|"line" -> line|>, resultBundle[value]]}]|>
];

(* A Manipulate result is live (when its controls can be read); anything else is shown. *)
resultBundle[value_] := With[{live = If[Head[value] === Manipulate, manipulate[value], $Failed]},
    If[AssociationQ[live], live, bundle[value]]];

(* Each expression is parsed when its turn comes; In[line] grows with what was parsed. *)
evaluateEach[line_, texts_List] := Module[{held = HoldComplete[], value = Null},
    Do[
        With[{next = parse[text]},
            held = Join[held, next];
            setIn[line, held];
            value = evaluateHeld[next]],
        {text, texts}];
    value
];

parse[text_String] := ToExpression[text, InputForm, HoldComplete];

(* What the main loop does for an uncaught Throw: the message, and the Throw held. *)
uncaught[evaluated[value_]] := value;
uncaught[thrown[value_, tag_]] := (Message[Throw::nocatch, HoldForm[Throw[value, tag]]];
    Hold[Throw[value, tag]]);
uncaught[value_] := (Message[Throw::nocatch, HoldForm[Throw[value]]]; Hold[Throw[value]]);

endLine[line_] := (
    Unprotect[MessageList]; MessageList[line] = $MessageList; Protect[MessageList];
    $Line = line + 1);

evaluateHeld[HoldComplete[es___]] :=
    If[ValueQ[$Pre], $Pre[CompoundExpression[es]], CompoundExpression[es]];

setIn[line_, HoldComplete[e_]] := (Unprotect[In]; In[line] := e; Protect[In]);
setIn[line_, HoldComplete[es__]] := (Unprotect[In]; In[line] := CompoundExpression[es];
    Protect[In]);

setOut[line_, value_] := (Unprotect[Out]; Out[line] = value; Protect[Out]);

(* The MIME bundle of a result: OutputForm text, plus a picture or TeX where they say more. *)
bundle[value_] := render[If[ValueQ[$PrePrint], $PrePrint[value], value]];

(* The bundle of what is shown as it is (temporary displays, views): Null shows nothing. *)
render[Null] := <||>;
render[shown_] := Module[{bar = progressBar[shown], text},
    If[AssociationQ[bar], bar,
        text = plainText[shown];
        Which[
            MatchQ[shown, $pictures], picture[shown, text],
            mathQ[shown] && FreeQ[shown, $pictures | $textForms], withTeX[shown, text],
            True, <|"text/plain" -> text|>
        ]]
];

plainText[x_] := Module[{text = ToString[x, OutputForm, PageWidth -> $pageWidth,
        CharacterEncoding -> "Unicode"]},
    If[StringLength[text] <= $maxText, text,
        ToString[Short[x, 40], OutputForm, PageWidth -> $pageWidth,
            CharacterEncoding -> "Unicode"] <> "\n(" <>
            ToString[StringLength[text]] <> " characters of output shortened)"]
];

(* Math is a compound expression other than a list, or a rational or complex number. *)
mathQ[_Rational | _Complex] := True;
mathQ[x_List] := Or @@ (mathQ /@ x);
mathQ[_?AtomQ] := False;
mathQ[_] := True;

withTeX[x_, text_] := Module[{tex = $Failed},
    If[LeafCount[x] <= $maxTeXLeaves, tex = Quiet[Check[ToString[TeXForm[x]], $Failed]]];
    If[StringQ[tex] && 0 < StringLength[tex] <= $maxTeX,
        <|"text/plain" -> text, "text/latex" -> "$$" <> tex <> "$$"|>,
        <|"text/plain" -> text|>]
];

(* Images are exported by the kernel; everything else is drawn by a front end, which a
   standalone kernel starts on demand (UsingFrontEnd) where one is installed. *)
picture[x_Image, text_] := withImage[text, "image/png", base64[Quiet[ExportString[x, "PNG"]]]];
picture[x : (_Graphics3D | _Image3D), text_] :=
    withImage[text, "image/png", base64[frontEndExport[x, "PNG"]]];
picture[x : (_Sound | _Audio | _Dataset | _Manipulate | _Dynamic | _DynamicModule), text_] :=
    <|"text/plain" -> text|>;
picture[x_, text_] := withImage[text, "image/svg+xml", frontEndExport[x, "SVG"]];

withImage[text_, type_, data_String] /; StringLength[data] > 0 :=
    <|"text/plain" -> text, type -> data|>;
withImage[text_, _, _] := <|"text/plain" -> text <> "\n" <> notDrawn[]|>;

notDrawn[] := "(not drawn: " <> If[StringQ[$frontEnd], $frontEnd,
    "the kernel could not render it"] <> "; graphics need a Wolfram front end on this host)";

(* A front end is probed once, when the first picture needs one; a failure of any kind (no
   answer in time, $Failed, a launch message such as UsingFrontEnd::nofestart) is remembered,
   so that later pictures are text at once, with the reason.  What the front end itself says
   (a missing libEGL, say) reaches the kernel's output, which the agent logs. *)
frontEndExport[x_, format_] := If[frontEndQ[],
    Quiet[TimeConstrained[Check[withFrontEnd[ExportString[x, format]], $Failed],
        $renderSeconds,
        $frontEnd = "the front end did not draw within " <> ToString[$renderSeconds] <> " s";
        $Failed]],
    $Failed
];

frontEndQ[] := (If[$frontEnd === Automatic, $frontEnd = probeFrontEnd[]]; $frontEnd === True);

(* A kernel without UsingFrontEnd (Mathics3) draws by itself. *)
probeFrontEnd[] := If[Names["System`UsingFrontEnd"] === {}, True, askFrontEnd[]];

askFrontEnd[] := Module[{answer = Quiet[TimeConstrained[
        Check[UsingFrontEnd[$FrontEnd], $Failed], $renderSeconds, $TimedOut]]},
    Which[
        answer === $TimedOut, "no front end answered within " <> ToString[$renderSeconds] <>
            " s",
        answer === $Failed, "a front end could not be launched (the engine log has what " <>
            "it said)",
        answer === Null, "no front end is installed or usable",
        True, True
    ]
];

SetAttributes[withFrontEnd, HoldAll];
withFrontEnd[expr_] := If[Names["System`UsingFrontEnd"] =!= {}, UsingFrontEnd[expr], expr];

base64[data_String] := StringReplace[ExportString[data, "Base64"], WhitespaceCharacter -> ""];
base64[_] := $Failed;

(* -- for values: EvaluatePacket's text ----------------------------------------------------- *)

(* Like ToExpression[code] (the engine's evaluate_expression: %%rkernel -o, a Manipulate's
   view): each expression parsed when its turn comes, no In/Out/$Line/$Pre/$Post; the value is
   wrapped so that the engine can tell it from a syntax error's position. *)
RKJupyter`EvaluateExpression[code_String] := Module[{chunks},
    Unprotect[$MessageList]; $MessageList = {}; Protect[$MessageList];
    chunks = statements[code];
    Which[
        chunks === {}, <|"value" -> Null|>,
        !SyntaxQ[Last[chunks][[2]]], <|"syntax" -> syntaxPosition[Last[chunks]]|>,
        True, <|"value" -> uncaught[Catch[Catch[evaluated[withDynamic[
            evaluatePlain[chunks[[All, 2]]]]]], _, thrown]]|>
    ]
];

evaluatePlain[texts_List] := Module[{value = Null},
    Do[value = Replace[parse[text], HoldComplete[es___] :> CompoundExpression[es]], {text, texts}];
    value
];

(* -- temporary displays: PrintTemporary, Monitor ------------------------------------------ *)

(* Evaluates e with PrintTemporary and Monitor sending temporary displays.  Block (not new
   definitions for the System` symbols) leaves the kernel's own untouched outside cells. *)
SetAttributes[withDynamic, HoldAll];
withDynamic[e_] := Block[{PrintTemporary = printTemporary, Monitor = monitor}, e];

$ids = 0;
$idPrefix = IntegerString[Mod[$SessionID, 36^8], 36, 8] <> IntegerString[$ProcessID, 36];
(* An id unique to this kernel session (a Manipulate's outlives an engine's restart in the
   notebook, whose next engine must not take it for one of its own). *)
newId[kind_String] := kind <> "-" <> $idPrefix <> "-" <> IntegerString[++$ids];

(* The engine reads DisplayPacket[{"RKDisplay", id, bundle or Null}] as RKDisplay[id, ...];
   a DisplayPacket is one a front end may get (WSNextPacket knows it), which a kernel sends
   by itself only for the PostScript of long-gone Display[$Display, ...]. *)
display[id_String, shown_] := writeDisplay[DisplayPacket[{"RKDisplay", id, shown}]];
writeDisplay[packet_] := If[Head[$ParentLink] === LinkObject, LinkWrite[$ParentLink, packet]];

printTemporary[e_] := (display[newId["t"], render[e]]; Null);
printTemporary[es___] := (display[newId["t"], render[Row[{es}]]]; Null);

(* Monitor[expr, mon]: mon shown at once and refreshed while expr evaluates, removed after. *)
SetAttributes[monitor, HoldAll];
monitor[expr_, mon_] := Module[{id = newId["d"], task = Null},
    cleanly[
        refresh[id, Hold[mon]]; task = startRefresh[id, Hold[mon]],
        expr,
        stopRefresh[task]; forget[id]; display[id, Null]]
];

(* A refresh sends the display only when it changed.  (Unset holds its target: the id is
   passed by value, so that it is the string that is forgotten.) *)
refresh[id_String, Hold[mon_]] := With[{shown = render[mon]},
    If[shownNow[id] =!= shown, shownNow[id] = shown; display[id, shown]]];

(* A scheduled task evaluates preemptively, while the Monitor's expression runs. *)
startRefresh[id_String, mon_Hold] := Which[
    Names["System`SessionSubmit"] =!= {},
        SessionSubmit[ScheduledTask[refresh[id, mon], $refresh]],
    Names["System`RunScheduledTask"] =!= {},   (* before 12.0 *)
        RunScheduledTask[refresh[id, mon], $refresh],
    True, Null
];
forget[id_String] := Quiet[shownNow[id] =.];

stopRefresh[Null] := Null;
stopRefresh[task_] := Quiet[If[Head[task] === ScheduledTaskObject, RemoveScheduledTask[task],
    TaskRemove[task]]];

(* cleanly[setup, body, cleanup]: cleanup runs however body ends (an abort, a Throw).  The
   kernel's own Internal`WithLocalSettings does it; elsewhere (Mathics3) an abort at least. *)
SetAttributes[cleanly, HoldAll];
If[MemberQ[Attributes[Internal`WithLocalSettings], HoldAll],
    cleanly[setup_, body_, cleanup_] := Internal`WithLocalSettings[setup, body, cleanup],
    cleanly[setup_, body_, cleanup_] := Module[{value},
        setup; value = CheckAbort[body, cleanup; Abort[]]; cleanup; value]
];

(* -- ProgressIndicator ---------------------------------------------------------------------- *)

(* A bar of text and an HTML <progress>, as the Mathics3 engine draws it; $Failed (shown as
   the expression it is) when the range is not two numbers. *)
progressBar[ProgressIndicator[x_]] := progressBar[ProgressIndicator[x, {0., 1.}]];
progressBar[ProgressIndicator[x_, {a_?realQ, b_?realQ}]] := Which[
    x === Indeterminate,
        <|"text/plain" -> "[" <> StringJoin[Table["~", {$bar}]] <> "]",
          "text/html" -> "<progress class=\"rk-progress\"></progress>"|>,
    N[b] <= N[a], $Failed,
    True, bar[Min[Max[((If[realQ[x], N[x], N[a]]) - N[a]) / (N[b] - N[a]), 0.], 1.]]
];
progressBar[_] := $Failed;

realQ[x_] := NumberQ[x] && Head[N[x]] === Real;

bar[fraction_Real] := Module[{filled = Round[fraction $bar], percent, value},
    percent = ToString[Round[100 fraction]] <> "%";
    value = IntegerString[Round[fraction 10^4], 10, 5];
    <|"text/plain" -> "[" <> StringJoin[Table["#", {filled}]] <>
        StringJoin[Table[".", {$bar - filled}]] <> "] " <> percent,
      "text/html" -> "<progress class=\"rk-progress\" value=\"" <> StringTake[value, 1] <>
        "." <> StringDrop[value, 1] <> "\" max=\"1\">" <> percent <> "</progress>"|>
];

(* -- Manipulate ----------------------------------------------------------------------------- *)

(* The bundle of a Manipulate result: its controls and first view; $Failed (then it is shown
   as text) after Manipulate::vsform when a control cannot be read.  Options other than
   ContinuousAction (SaveDefinitions, ControlPlacement, ...) are accepted and ignored. *)
manipulate[Manipulate[expr_, specs___]] := Module[
    {held = List @@ Map[HoldComplete, HoldComplete[specs]], parsed, bad},
    parsed = control /@ held;
    bad = Position[parsed, $Failed, {1}];
    If[bad === {}, live[HoldComplete[expr], parsed],
        manipulateMessages[];
        Replace[held[[bad[[1, 1]]]], HoldComplete[s_] :> Message[Manipulate::vsform, HoldForm[s]]];
        $Failed]
];
manipulate[_] := $Failed;

live[expr_HoldComplete, parsed_List] := Module[{controls, id, view, continuous = True},
    Scan[If[MatchQ[#, continuity[_]], continuous = First[#]] &, parsed];
    controls = Cases[parsed, {_HoldComplete, _Association, _}];
    id = newId["m"];
    keep[id, {controls[[All, 1]], controls[[All, 3]], expr}];
    view = CheckAbort[viewOf[id, #[[2]]["value"] & /@ controls], <|"text/plain" -> "$Aborted"|>];
    Join[view, <|"text/plain" -> textOf[view],
        $manipulateMime -> <|"id" -> id, "controls" -> controls[[All, 2]],
            "continuous" -> continuous, "view" -> view|>|>]
];

textOf[bundle_Association] := If[MemberQ[Keys[bundle], "text/plain"], bundle["text/plain"], ""];

(* One argument of Manipulate, held: continuity[bool], ignored (an option), $Failed, or
   {HoldComplete[u], the control's specification, its choices (choice[{...}]) or Null}. *)
control[HoldComplete[(Rule | RuleDelayed)[ContinuousAction, v_]]] := continuity[v =!= False];
control[HoldComplete[(Rule | RuleDelayed)[_Symbol | _String, _]]] := ignored;
control[HoldComplete[{{u_Symbol, init_, label_}, rest__}]] :=
    control[HoldComplete[u], HoldComplete[init], HoldComplete[rest],
        If[StringQ[label], label, ToString[label, OutputForm]]];
control[HoldComplete[{{u_Symbol, init_}, rest__}]] :=
    control[HoldComplete[u], HoldComplete[init], HoldComplete[rest], None];
control[HoldComplete[{u_Symbol, rest__}]] :=
    control[HoldComplete[u], None, HoldComplete[rest], None];
control[HoldComplete[u_Symbol], init_, HoldComplete[rest__], label_] /;
    Context[Unevaluated[u]] =!= "System`" := Module[
    {name = SymbolName[Unevaluated[u]], items, kind},
    (* options inside a control ({u, 0, 1, Appearance -> "Labeled"}) are ignored *)
    items = DeleteCases[List @@ Map[HoldComplete, HoldComplete[rest]],
        HoldComplete[(Rule | RuleDelayed)[_Symbol, _]]];
    kind = Which[
        Length[items] == 1 && MatchQ[items[[1]], HoldComplete[_List]],
            choiceControl[released[items[[1]]], init],
        2 <= Length[items] <= 3, sliderControl[number /@ items, init],
        True, $Failed];
    If[kind === $Failed, $Failed,
        {HoldComplete[u], Join[<|"name" -> name, "label" -> If[label === None, name, label]|>,
            kind[[1]]], kind[[2]]}]
];
control[___] := $Failed;

released[HoldComplete[e_]] := e;

(* {the control's kind and value, its choices or Null} *)
choiceControl[{}, _] := $Failed;
choiceControl[options_List, init_] /; Sort[options] === {False, True} :=
    {<|"kind" -> "checkbox",
       "value" -> TrueQ[If[init === None, First[options], released[init]]]|>, Null};
choiceControl[options_List, init_] := With[{index = If[init === None, {},
        Flatten[Position[SameQ[#, released[init]] & /@ options, True]]]},
    {<|"kind" -> "choice", "labels" -> (ToString[#, OutputForm] & /@ options),
       "value" -> If[index === {}, 1, First[index]]|>, choice[options]}
];

sliderControl[bounds_List, init_] /; !MemberQ[bounds, $Failed] :=
    With[{b = If[Length[bounds] == 2, Append[bounds, Null], bounds]},
        slider[b[[1]], b[[2]], b[[3]], If[init === None, b[[1]], number[init]]]];
sliderControl[___] := $Failed;

slider[low_, high_, step_, start_] /;
    start =!= $Failed && (step === Null || step > 0) && high >= low :=
    {<|"kind" -> "slider", "min" -> low, "max" -> high, "step" -> step, "value" -> start,
       "integer" -> And @@ (IntegerQ /@ {low, high, step, start})|>, Null};
slider[___] := $Failed;

(* An integer as it is (within 64 bits, for the link), any other real as a machine real. *)
number[HoldComplete[e_]] := With[{value = e},
    Which[IntegerQ[value] && Abs[value] < 2^62, value,
        Head[N[value]] === Real, N[value],
        True, $Failed]];

(* The kept Manipulates, the most recently used last. *)
$kept = {};
keep[id_String, data_] := (
    kept[id] = data;
    $kept = Append[DeleteCases[$kept, id], id];
    While[Length[$kept] > $keep, unkeep[First[$kept]]; $kept = Rest[$kept]]);
unkeep[id_String] := Quiet[kept[id] =.];

RKJupyter`ManipulateView[id_String, values_List] := (
    Unprotect[$MessageList]; $MessageList = {}; Protect[$MessageList];
    viewOf[id, values]);

(* With[{u = value, ...}, expr] evaluated as a cell would be, and rendered. *)
viewOf[id_String, values_List] := With[{data = kept[id]},
    If[MatchQ[data, {_List, _List, _HoldComplete}] && Length[values] === Length[data[[1]]],
        keep[id, data]; viewWith[data, values],
        manipulateMessages[]; Message[Manipulate::gone]; <||>]
];

viewWith[{symbols_, choices_, expr_}, values_List] := With[
    {sets = MapThread[assignment, {symbols, choices, values}]},
    render[uncaught[Catch[Catch[evaluated[withDynamic[
        Replace[{Join[HoldComplete[], Sequence @@ sets], expr},
            {HoldComplete[a___], HoldComplete[e_]} :> With[{a}, e]]]]], _, thrown]]]
];

assignment[HoldComplete[u_], choice[options_], v_] :=
    With[{item = options[[Max[1, Min[If[NumberQ[v], Round[v], 1], Length[options]]]]]},
        HoldComplete[u = item]];
assignment[HoldComplete[u_], _, v_] := HoldComplete[u = v];

(* The messages the kernel's Manipulate may lack, defined when first needed. *)
manipulateMessages[] := If[!StringQ[MessageName[Manipulate, "gone"]],
    Module[{unprotected = Unprotect[Manipulate]},
        If[!StringQ[MessageName[Manipulate, "vsform"]],
            MessageName[Manipulate, "vsform"] = "Manipulate argument `1` does not have the " <>
                "correct form for a variable specification."];
        MessageName[Manipulate, "gone"] = "This Manipulate's engine has ended or forgotten " <>
            "it; evaluate its cell again.";
        If[ListQ[unprotected], Protect @@ unprotected]]];

RKJupyter`Complete[prefix_String] := Module[{names = Quiet[Names[prefix <> "*"]]},
    Take[names, Min[Length[names], 500]]
];

RKJupyter`Inspect[name_String] := Module[{usage = Null},
    If[Quiet[Names[name]] =!= {},
        usage = Quiet[ToExpression[name, InputForm,
            Function[symbol, MessageName[symbol, "usage"], HoldFirst]]]
    ];
    If[StringQ[usage], <|"text/plain" -> usage|>, Null]
];

RKJupyter`Info[] := <|"version" -> $Version, "versionNumber" -> $VersionNumber,
    "systemID" -> $SystemID, "processID" -> $ProcessID, "line" -> $Line|>;

End[];
